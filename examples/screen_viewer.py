"""Watch the screen shares of a voice channel and save snapshots as PNG files.

    python examples/screen_viewer.py http://127.0.0.1:8080 TOKEN general shots/

The bot joins CHANNEL without publishing anything and, every ``--every``
seconds, saves the latest frame of each screen share that showed a new frame
since the last snapshot to OUTDIR/<user>-<peer id>-<n>.png, until Ctrl-C,
``--seconds`` or the server closing the connection. PNG files are written with
the standard library (with Pillow installed, ``frame.to_image().save(path)``
does the same).

A token: ``SFU_SECRET=<the server's secret> miscord-sfu token --user viewer
--channel general``; or, from a server bound to loopback and started without a
secret, the development login::

    curl -s -X POST -d '{"user": "viewer"}' http://127.0.0.1:8080/api/dev-login
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import struct
import zlib
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from miscord_client import VoiceClient


def write_png(path: Path, frame: av.VideoFrame) -> None:
    """``frame`` as an 8-bit RGB PNG, unfiltered."""
    rgb = frame.to_ndarray(format="rgb24")
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + width * 3), np.uint8)  # a filter byte (0) per row
    rows[:, 1:] = rgb.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )


class Viewer:
    """Decodes every screen share, keeps each one's latest frame, saves them."""

    def __init__(self, client: VoiceClient, outdir: Path) -> None:
        self.client = client
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)
        self.saved: list[Path] = []
        self._latest: dict[str, tuple[str, av.VideoFrame]] = {}  # mid -> peer, frame
        self._counts: dict[str, int] = {}  # peer id -> snapshots saved
        self._tasks: dict[str, asyncio.Task[None]] = {}  # mid -> its reader

    async def follow(self) -> None:
        """Read every m-line the server offers (``client.remote`` changes with
        each subscribe offer), until the connection closes."""
        while True:
            try:
                mids = await self.client.wait_for(self._new_mids, timeout=math.inf)
            except ConnectionError:
                return
            for mid in mids:
                remote = self.client.remote[mid]
                # microphones are decoded too (the server offers every source):
                # read and dropped, or their frames would pile up in memory
                self._tasks[mid] = asyncio.create_task(self._read(mid, remote.track))

    def _new_mids(self) -> list[str]:
        return [mid for mid in self.client.remote if mid not in self._tasks]

    async def _read(self, mid: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):  # the connection closed
            while True:
                frame = await track.recv()
                # the server reuses an m-line for whoever shares next: ask whose
                # it is now
                remote = self.client.remote.get(mid)
                if remote is not None and remote.source == "screen":
                    assert isinstance(frame, av.VideoFrame)
                    self._latest[mid] = (remote.peer_id, frame)

    async def snapshots(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            latest, self._latest = self._latest, {}
            for peer_id, frame in latest.values():
                n = self._counts[peer_id] = self._counts.get(peer_id, 0) + 1
                user = self.client.participants.get(peer_id, {}).get("user_id")
                name = f"{user}-{peer_id}" if user else peer_id
                path = self.outdir / f"{name}-{n:04d}.png"
                # off the event loop: converting and compressing a large screen
                # takes long enough to delay media
                await asyncio.to_thread(write_png, path, frame)
                self.saved.append(path)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def main(
    url: str,
    token: str,
    channel: str,
    outdir: str | Path,
    every: float = 5.0,
    seconds: float | None = None,
) -> list[Path]:
    """Save a snapshot of each screen share in ``channel`` every ``every``
    seconds (for ``seconds``, or until cancelled); return the files written."""
    client = VoiceClient(url, token)  # a loopback URL: ICE on 127.0.0.1
    viewer = Viewer(client, Path(outdir))
    tasks: list[asyncio.Task[None]] = []
    try:
        await client.join(channel)
        follow = asyncio.create_task(viewer.follow())
        tasks = [follow, asyncio.create_task(viewer.snapshots(every))]
        await asyncio.wait({follow}, timeout=seconds)
        await client.leave()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await viewer.close()
        await client.close()
    return viewer.saved


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("token", help="an access token for the channel")
    parser.add_argument("channel")
    parser.add_argument("outdir", help="where the PNG files go")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between")
    parser.add_argument("--seconds", type=float, help="stop after this long")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(
                args.url,
                args.token,
                args.channel,
                args.outdir,
                args.every,
                args.seconds,
            )
        )
