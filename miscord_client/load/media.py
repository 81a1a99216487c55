"""Cheap synthetic participants for load tests and benchmarks.

A load client must cost far less than the server it measures, so it never
encodes or decodes: publishers send pre-built payloads that carry a send-time
stamp, and receivers count RTP packets (``VoiceClient(raw_sink=...)``) and read
the stamps back. The server forwards these payloads like any other: it never
looks inside an Opus packet, and for video it only reads the VP8 keyframe bit.
"""

from __future__ import annotations

import asyncio
import fractions
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from ..client import RemoteTrack

MAGIC = b"MSFU"
STAMP = struct.Struct("!4sd")  # magic, send time (time.time())
AUDIO_RATE = 48000
VIDEO_RATE = 90000


class _Paced(MediaStreamTrack):
    """Emits one item every ``period`` seconds, on a wall-clock schedule."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self.period = period
        self.count = 0
        self._start: float | None = None

    async def _tick(self) -> None:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self.count * self.period - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.count += 1


class StampedAudio(_Paced):
    """20 ms "Opus" packets of ``size`` bytes whose payload is a send-time stamp.

    Never decodable: for forwarding measurements only. ``opus_frames`` (real
    Opus packets, e.g. from ``encode_tone``) replaces the stamp for paths that
    decode (the MediaRelay baseline).
    """

    kind = "audio"

    def __init__(self, size: int = 80, opus_frames: list[bytes] | None = None) -> None:
        super().__init__(0.02)
        self.size = size
        self.opus_frames = opus_frames

    async def recv(self) -> av.Packet:
        await self._tick()
        if self.opus_frames:
            data = self.opus_frames[self.count % len(self.opus_frames)]
        else:
            data = STAMP.pack(MAGIC, time.time()).ljust(self.size, b"\0")
        packet = av.Packet(data)
        packet.pts = self.count * 960
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        return packet


class StampedScreen(_Paced):
    """A screen of ``bitrate`` bits/s at ``fps``: frames of the right size whose
    first byte is a VP8 frame tag (a keyframe every ``keyframe_every`` frames),
    then a send-time stamp. aiortc packetizes them like real VP8."""

    kind = "video"

    def __init__(
        self, bitrate: int = 2_000_000, fps: int = 15, keyframe_every: int = 30
    ) -> None:
        super().__init__(1 / fps)
        self.frame_size = bitrate // 8 // fps
        self.keyframe_every = keyframe_every

    async def recv(self) -> av.Packet:
        await self._tick()
        tag = b"\x00" if self.count % self.keyframe_every == 1 else b"\x01"
        data = (tag + STAMP.pack(MAGIC, time.time())).ljust(self.frame_size, b"\x5a")
        packet = av.Packet(data)
        packet.pts = int(self.count * VIDEO_RATE * self.period)
        packet.time_base = fractions.Fraction(1, VIDEO_RATE)
        return packet


def encode_tone(freq: float = 440.0, seconds: float = 1.0) -> list[bytes]:
    """Real Opus packets of a tone (20 ms each), encoded once up front."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = AUDIO_RATE
    encoder.layout = "stereo"
    encoder.format = "s16"
    encoder.bit_rate = 32000
    frames: list[bytes] = []
    for i in range(int(seconds * 50)):
        t = (np.arange(960) + i * 960) / AUDIO_RATE
        mono = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * 960
        frames.extend(bytes(p) for p in encoder.encode(frame))
    return frames


def read_stamp(payload: bytes) -> float | None:
    """The send time in a stamped payload (audio, or a video frame's first packet
    behind its VP8 payload descriptor), else None."""
    at = payload.find(MAGIC, 0, 24)
    if at < 0 or len(payload) < at + STAMP.size:
        return None
    return STAMP.unpack_from(payload, at)[1]


@dataclass
class StreamCount:
    """What one subscriber received of one publisher's source."""

    peer_id: str
    source: str
    first_at: float
    packets: int = 0
    bytes: int = 0
    base_seq: int | None = None
    max_seq: int = 0  # extended (wraps counted)
    latencies: list[float] = field(default_factory=list)

    def add(self, packet: RtpPacket, now: float, keep_latency: bool) -> None:
        seq = packet.sequence_number
        if self.base_seq is None:
            self.base_seq = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if delta < 0x8000:
                self.max_seq += delta
        self.packets += 1
        self.bytes += len(packet.payload)
        if keep_latency:
            sent = read_stamp(packet.payload)
            if sent is not None:
                self.latencies.append(now - sent)

    @property
    def expected(self) -> int:
        return 0 if self.base_seq is None else self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)


class Counter:
    """A ``raw_sink`` for VoiceClient: counts every received stream."""

    def __init__(self, latency_every: int = 1) -> None:
        self.streams: dict[tuple[str, str], StreamCount] = {}
        self.latency_every = latency_every
        self._n = 0
        self.on_packet: Callable[[RemoteTrack, RtpPacket], None] | None = None

    def __call__(self, remote: RemoteTrack, packet: RtpPacket) -> None:
        now = time.time()
        key = (remote.peer_id, remote.source)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = StreamCount(remote.peer_id, remote.source, now)
        self._n += 1
        stream.add(packet, now, self._n % self.latency_every == 0)

    def reset(self) -> None:
        """Forget everything counted so far (start of a measurement window)."""
        self.streams.clear()
