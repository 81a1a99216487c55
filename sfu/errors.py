"""Errors the media core raises for bad client input; ``code`` is the contract's."""

from __future__ import annotations

from miscord_client import protocol


class MediaError(Exception):
    code = protocol.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadSdp(MediaError):
    code = protocol.BAD_SDP


class BadRequest(MediaError):
    code = protocol.BAD_MESSAGE


class Forbidden(MediaError):
    """The participant's token lacks the right (``can``) for what it asked."""

    code = protocol.FORBIDDEN


class ChannelFull(MediaError):
    code = protocol.CHANNEL_FULL


class NoPorts(MediaError):
    """The media port range has no port left for this participant."""

    code = protocol.NO_PORTS
