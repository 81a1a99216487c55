"""Record every microphone of a voice channel, each to its own WAV file.

    python examples/record_channel.py http://127.0.0.1:8080 TOKEN general out/

The bot joins CHANNEL without publishing anything and writes what each
participant says to OUTDIR/<user>-<peer id>.wav (48 kHz, mono, 16-bit),
participants who join later included, until Ctrl-C, ``--seconds`` or the server
closing the connection. Only what arrives is written: time during which a
participant sends nothing (before they joined, after they left) is not filled in.

A token: ``SFU_SECRET=<the server's secret> miscord-sfu token --user recorder
--channel general``; or, from a server bound to loopback and started without a
secret, the development login::

    curl -s -X POST -d '{"user": "recorder"}' http://127.0.0.1:8080/api/dev-login
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import wave
from pathlib import Path

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from miscord_client import VoiceClient

RATE = 48000


class Recorder:
    """One task per microphone m-line of the subscribe connection, one WAV file
    per participant."""

    def __init__(self, client: VoiceClient, outdir: Path) -> None:
        self.client = client
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}  # peer id -> its file
        self._wavs: dict[str, tuple[wave.Wave_write, av.AudioResampler]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # mid -> its recording

    async def follow(self) -> None:
        """Record every microphone the server offers (``client.remote`` changes
        with each subscribe offer), until the connection closes."""
        while True:
            try:
                mids = await self.client.wait_for(self._new_mids, timeout=math.inf)
            except ConnectionError:
                return
            for mid in mids:
                track = self.client.remote[mid].track
                self._tasks[mid] = asyncio.create_task(self._record(mid, track))

    def _new_mids(self) -> list[str]:
        return [
            mid
            for mid, remote in self.client.remote.items()
            if remote.source == "microphone" and mid not in self._tasks
        ]

    async def _record(self, mid: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):  # the connection closed
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)  # decoded audio
                # the server reuses an m-line for whoever publishes next: ask
                # whose it is now
                remote = self.client.remote.get(mid)
                if remote is not None:
                    self._write(remote.peer_id, frame)

    def _write(self, peer_id: str, frame: av.AudioFrame) -> None:
        if peer_id not in self._wavs:
            user = self.client.participants.get(peer_id, {}).get("user_id")
            path = self.outdir / (f"{user}-{peer_id}.wav" if user else f"{peer_id}.wav")
            wav = wave.open(str(path), "wb")  # noqa: SIM115 (closed in close())
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            self._wavs[peer_id] = (wav, resampler)
            self.files[peer_id] = path
            print(f"recording {user or peer_id} to {path}")
        wav, resampler = self._wavs[peer_id]
        for mono in resampler.resample(frame):
            wav.writeframes(mono.to_ndarray().tobytes())

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for wav, _ in self._wavs.values():
            wav.close()  # completes the header


async def main(
    url: str,
    token: str,
    channel: str,
    outdir: str | Path,
    seconds: float | None = None,
) -> dict[str, Path]:
    """Record ``channel`` into ``outdir`` (for ``seconds``, or until cancelled);
    return the files per peer id."""
    client = VoiceClient(url, token)  # a loopback URL: ICE on 127.0.0.1
    recorder = Recorder(client, Path(outdir))
    follow: asyncio.Task[None] | None = None
    try:
        await client.join(channel)
        follow = asyncio.create_task(recorder.follow())
        await asyncio.wait({follow}, timeout=seconds)
        await client.leave()
    finally:
        if follow is not None:
            follow.cancel()
        await recorder.close()
        await client.close()
    return recorder.files


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("token", help="an access token for the channel")
    parser.add_argument("channel")
    parser.add_argument("outdir", help="where the WAV files go")
    parser.add_argument("--seconds", type=float, help="stop after this long")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.url, args.token, args.channel, args.outdir, args.seconds))
