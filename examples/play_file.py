"""Play an audio file into a voice channel as a bot's microphone.

    python examples/play_file.py http://127.0.0.1:8080 TOKEN general hello.mp3

The bot joins CHANNEL, publishes FILE (anything FFmpeg decodes: WAV, OGG, MP3,
...) as its microphone in real time, and leaves when the file ends (or on
Ctrl-C, or when the server closes the connection).

A token: ``SFU_SECRET=<the server's secret> miscord-sfu token --user bot
--channel general``; or, from a server bound to loopback and started without a
secret, the development login::

    curl -s -X POST -d '{"user": "bot"}' http://127.0.0.1:8080/api/dev-login
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
from collections.abc import Awaitable

from aiortc.contrib.media import MediaPlayer

from miscord_client import VoiceClient


async def closed(client: VoiceClient) -> None:
    """Return when the server closes the connection (``wait_for`` raises then)."""
    with contextlib.suppress(ConnectionError):
        await client.wait_for(lambda: False, timeout=math.inf)


async def first_of(*waits: Awaitable[object], timeout: float | None) -> None:
    """Wait until one of ``waits`` is done, or ``timeout`` seconds."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def main(
    url: str, token: str, channel: str, path: str, seconds: float | None = None
) -> None:
    """Join ``channel``, play ``path`` until it ends (at most ``seconds``), leave."""
    audio = MediaPlayer(path).audio
    if audio is None:
        raise ValueError(f"{path}: no audio stream")
    ended = asyncio.Event()
    audio.on("ended", ended.set)  # the player stops its track at the end of file
    # a loopback URL makes the client gather ICE on 127.0.0.1 itself
    client = VoiceClient(url, token)
    try:
        await client.join(channel)
        await client.publish(microphone=audio)
        await first_of(ended.wait(), closed(client), timeout=seconds)
        if client.close_code is not None:
            raise ConnectionError(f"closed by the server ({client.close_code})")
        await client.leave()
    finally:
        audio.stop()
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("token", help="an access token for the channel")
    parser.add_argument("channel")
    parser.add_argument("file", help="an audio file: WAV, OGG, MP3, ...")
    parser.add_argument("--seconds", type=float, help="stop after this long")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.url, args.token, args.channel, args.file, args.seconds))
