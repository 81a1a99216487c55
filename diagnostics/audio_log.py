"""Audio-data logging for one peer: decode a copy of its microphone, log 🎙️ lines.

The tap on the publication only appends the Opus payload to a bounded deque
(O(1); the oldest is dropped when full), so forwarding never waits. Once a
second a worker decodes what accumulated with PyAV's Opus decoder in a thread
and logs RMS and peak in dBFS, clipping, silence, packets and frames per
second. The decoder exists only while logging is on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
import numpy as np
from aiortc.rtp import RtpPacket

from . import logs

if TYPE_CHECKING:
    from sfu.publication import Publication

log = logs.get("voice")

#: payloads kept between two decodes: 10 s of 20 ms packets
QUEUE_PACKETS = 500
#: below this RMS a second counts as silence
SILENCE_DBFS = -60.0
#: a sample this close to full scale counts as clipped
CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class AudioSecond:
    """What one decoded stretch of audio measured."""

    packets: int
    frames: int
    samples: int
    rms_dbfs: float
    peak_dbfs: float
    clipped_pct: float
    errors: int

    @property
    def silent(self) -> bool:
        return self.rms_dbfs < SILENCE_DBFS


def dbfs(value: float) -> float:
    return 20 * float(np.log10(max(value, 1e-10)))


def measure(decoder: av.AudioCodecContext, payloads: list[bytes]) -> AudioSecond:
    """Decode and measure (runs in a worker thread, never on the event loop)."""
    chunks: list[np.ndarray] = []
    frames = errors = 0
    for payload in payloads:
        try:
            decoded = decoder.decode(av.Packet(payload))
        except av.error.FFmpegError:
            errors += 1
            continue
        for frame in decoded:
            frames += 1
            chunks.append(frame.to_ndarray().astype(np.float32).reshape(-1))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size:
        rms = float(np.sqrt(np.mean(np.square(audio))))
        peak = float(np.max(np.abs(audio)))
        clipped = 100.0 * float(np.mean(np.abs(audio) >= CLIP_LEVEL))
    else:
        rms = peak = clipped = 0.0
    return AudioSecond(
        len(payloads), frames, audio.size, dbfs(rms), dbfs(peak), clipped, errors
    )


class AudioDataLogger:
    def __init__(self, peer_id: str, publication: Publication) -> None:
        self.peer_id = peer_id
        self.publication = publication
        self.queue: deque[bytes] = deque(maxlen=QUEUE_PACKETS)
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def tap(self, packet: RtpPacket) -> None:
        """Called with every forwarded packet: O(1), no allocation but the deque's."""
        queue = self.queue
        if len(queue) == QUEUE_PACKETS:
            self.dropped += 1
        queue.append(packet.payload)

    def start(self) -> None:
        self.publication.add_tap(self.tap)
        self._task = asyncio.create_task(self._run(), name=f"audio-log:{self.peer_id}")
        log.info("audio-data logging on for %s", self.peer_id)

    def stop(self) -> asyncio.Task[None] | None:
        """Remove the tap and cancel the worker; returns it to await if wanted."""
        self.publication.remove_tap(self.tap)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            log.info("audio-data logging off for %s", self.peer_id)
        self.queue.clear()
        return task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        decoder = av.AudioCodecContext.create("opus", "r")
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            payloads = [self.queue.popleft() for _ in range(len(self.queue))]
            second = await loop.run_in_executor(None, measure, decoder, payloads)
            now = time.monotonic()
            elapsed, last = now - last, now
            dropped, self.dropped = self.dropped, 0
            log.info(
                "audio of %s: RMS %.1f dBFS, peak %.1f dBFS, clipping %.2f %%, %s, "
                "%.0f packets/s, %.0f frames/s, %d dropped, %d undecodable",
                self.peer_id,
                second.rms_dbfs,
                second.peak_dbfs,
                second.clipped_pct,
                "silence" if second.silent else "sound",
                second.packets / elapsed,
                second.frames / elapsed,
                dropped,
                second.errors,
            )
