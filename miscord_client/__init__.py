"""The Python client of miscord-sfu: join a voice channel, publish, receive,
mute, leave (``VoiceClient``). It holds the signaling contract in code
(``protocol``) and the aiortc helpers a client needs (``ice``, ``rtc``);
``load`` is the load tool built on it, ``tokens`` mints access tokens.

Importing it changes nothing in aiortc or aioice: a client given ICE addresses
calls ``ice.install()`` itself.
"""

from .client import RemoteTrack, ServerError, VoiceClient

__all__ = ["RemoteTrack", "ServerError", "VoiceClient"]
