"""Real media for tests: tone and frame-counter sources, recorders, FFT checks."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

RATE = 48000
FRAME = 960  # 20 ms


class ToneTrack(MediaStreamTrack):
    """A sine tone at ``freq`` Hz, paced in real time like a microphone."""

    kind = "audio"

    def __init__(self, freq: float, amplitude: float = 0.3) -> None:
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self.silent = False
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(FRAME) + self._pts) / RATE
        amplitude = 0.0 if self.silent else self.amplitude
        samples = (amplitude * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(
            np.int16
        )
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


class AudioRecorder:
    """Consumes a received audio track and keeps its last seconds as mono floats."""

    def __init__(self, track: MediaStreamTrack, keep_seconds: float = 10.0) -> None:
        self.track = track
        self.keep = int(keep_seconds * RATE)
        self.chunks: list[tuple[float, np.ndarray]] = []
        self.frames = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await self.track.recv()
                data = frame.to_ndarray().astype(np.float32) / 32768
                channels = len(frame.layout.channels)
                mono = (
                    data.reshape(-1, channels).mean(axis=1)
                    if channels > 1
                    else data.ravel()
                )
                self.chunks.append((time.monotonic(), mono))
                self.frames += 1
                total = sum(len(c) for _, c in self.chunks)
                while total - len(self.chunks[0][1]) > self.keep:
                    total -= len(self.chunks.pop(0)[1])

    def since(self, t0: float) -> np.ndarray:
        parts = [c for t, c in self.chunks if t >= t0]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def last(self, seconds: float) -> np.ndarray:
        return self.since(time.monotonic() - seconds)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def tone_share(samples: np.ndarray, freq: float) -> float:
    """Share (0..1) of the signal's power within 10 Hz of ``freq``; 0 for silence."""
    if len(samples) < RATE // 10 or float(np.sqrt(np.mean(samples**2))) < 1e-4:
        return 0.0
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    band = (freqs > freq - 10) & (freqs < freq + 10)
    return float(power[band].sum() / power.sum())


HEARD = 0.5  # a tone carries at least half of the power
ABSENT = 0.01


async def wait_for_tone(
    recorder: AudioRecorder, freq: float, timeout: float = 5.0, window: float = 0.5
) -> float:
    """Seconds until ``freq`` is heard in the last ``window`` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if tone_share(recorder.last(window), freq) >= HEARD:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"{freq} Hz not heard within {timeout} s")


# --- video ------------------------------------------------------------------------

VIDEO_RATE = 90000
BITS = 12
BLOCK = 32


class CounterScreen(MediaStreamTrack):
    """A synthetic screen whose frames show their own number as 12 black/white
    blocks (robust to VP8 compression), paced at ``fps``."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 360, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self._start: float | None = None
        yy, xx = np.mgrid[0:height, 0:width]
        self._background = ((xx * 3 + yy * 2) % 200 + 30).astype(np.uint8)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.count / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        image = self._background.copy()
        for bit in range(BITS):
            x = BLOCK + bit * (BLOCK + BLOCK // 2)
            image[BLOCK : 2 * BLOCK, x : x + BLOCK] = (
                255 if (self.count >> bit) & 1 else 0
            )
        planes = np.concatenate(
            [image.ravel(), np.full(self.width * self.height // 2, 128, np.uint8)]
        )
        frame = av.VideoFrame.from_ndarray(
            planes.reshape(self.height * 3 // 2, self.width), format="yuv420p"
        )
        frame.pts = int(self.count * VIDEO_RATE / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_RATE)
        self.count += 1
        return frame


def read_counter(frame: av.VideoFrame) -> int:
    luma = frame.to_ndarray(format="gray")
    value = 0
    for bit in range(BITS):
        x = BLOCK + bit * (BLOCK + BLOCK // 2)
        block = luma[BLOCK + 8 : 2 * BLOCK - 8, x + 8 : x + BLOCK - 8]
        if block.mean() > 128:
            value |= 1 << bit
    return value


class VideoWatcher:
    """Decodes a received screen and notes (arrival time, counter) per frame."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.started = time.monotonic()
        self.frames: list[tuple[float, int]] = []
        self.size: tuple[int, int] | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await self.track.recv()
                self.size = (frame.width, frame.height)
                self.frames.append((time.monotonic(), read_counter(frame)))

    @property
    def counters(self) -> list[int]:
        return [c for _, c in self.frames]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
