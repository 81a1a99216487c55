"""The fallback paths: forward through aiortc's own senders.

``TrackDownlink`` (``--forwarding track``): encoded frames go through a bounded
queue into a track that aiortc's sender packetizes without encoding. Slower than
the fast path (a queue, a task and a packetizer per subscriber) but uses only
aiortc's public sending API.

``RelayDownlink`` (``--forwarding relay``): the decode-and-re-encode baseline
(aiortc's MediaRelay) that the benchmarks compare against. Never the default.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.codecs import depayload
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
)

from .downlink import Downlink
from .rtc.outbound import intercept_rtcp

QUEUE_LIMIT = 64  # frames; when full the oldest is dropped, never the event loop


class ForwardTrack(MediaStreamTrack):
    """A track whose frames are already encoded (``av.Packet``)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    def push(self, packet: av.Packet | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self.queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet


class TrackDownlink(Downlink):
    """One subscriber m-line on the track path."""

    def __init__(self, transceiver: RTCRtpTransceiver, kind: str, viewer: str) -> None:
        super().__init__(transceiver, kind, viewer)
        self.track = ForwardTrack(kind)
        self.sender = transceiver.sender
        self.sender.replaceTrack(self.track)
        self._frame: list[bytes] = []
        self._frame_ts: int | None = None
        self._next_seq: int | None = None
        self.packets_sent = 0
        intercept_rtcp(self.sender, self._on_rtcp)

    def bind(self, publication: Any) -> None:
        self.publication = publication
        if self.kind == "video":
            self._ask_keyframe()  # a new viewer needs a picture to start

    def unbind(self) -> None:
        pass  # the publication no longer writes to it

    def write(self, packet: RtpPacket) -> None:
        pub = self.publication
        if pub is None:
            return
        time_base = fractions.Fraction(1, pub.codec.clockRate)
        if self.kind == "audio":
            self._emit(packet.payload, packet.timestamp, time_base)
            return
        # video: aiortc's packetizer wants whole frames
        if packet.timestamp != self._frame_ts or (
            self._next_seq is not None and packet.sequence_number != self._next_seq
        ):
            self._frame, self._frame_ts = [], packet.timestamp
        self._next_seq = (packet.sequence_number + 1) & 0xFFFF
        try:
            self._frame.append(depayload(pub.codec, packet.payload))
        except ValueError:
            self._frame = []
            return
        if packet.marker and self._frame:
            self._emit(b"".join(self._frame), packet.timestamp, time_base)
            self._frame = []

    def _emit(self, data: bytes, pts: int, time_base: fractions.Fraction) -> None:
        frame = av.Packet(data)
        frame.pts = pts
        frame.time_base = time_base
        self.track.push(frame)
        self.packets_sent += 1

    async def _on_rtcp(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
            RTCP_PSFB_PLI,
            RTCP_PSFB_FIR,
        ):
            self._ask_keyframe()

    def stats(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "outbound-rtp",
                "id": f"outbound-rtp_{self.sender._ssrc}",
                "ssrc": self.sender._ssrc,
                "kind": self.kind,
                "mid": self.mid,
                "framesQueued": self.track.queue.qsize(),
                "framesDropped": self.track.dropped,
                "packetsSent": self.packets_sent,
            }
        ]

    def close(self) -> None:
        self.unbind()
        self.track.push(None)


class RelayDownlink(Downlink):
    """One subscriber m-line fed by MediaRelay: decode once, encode per subscriber."""

    def __init__(self, transceiver: RTCRtpTransceiver, kind: str, viewer: str) -> None:
        super().__init__(transceiver, kind, viewer)
        self.sender = transceiver.sender
        self._proxy: MediaStreamTrack | None = None

    def bind(self, publication: Any) -> None:
        self.publication = publication
        self._proxy = publication.relay_track()
        self.sender.replaceTrack(self._proxy)

    def unbind(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def write(self, packet: RtpPacket) -> None:
        """Media reaches this sender through the relay, not packet by packet."""

    def stats(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self.unbind()


class Relay:
    """A publication's MediaRelay (relay mode only)."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self._relay = MediaRelay()
        self._track = track

    def subscribe(self) -> MediaStreamTrack:
        return self._relay.subscribe(self._track, buffered=False)
