"""aiortc for a client of miscord-sfu (and for the server, which builds on it):
peer connections made and taken apart, and RTP received without decoding.

aiortc has no public way to receive RTP without decoding it; ``RawReceiver``
takes a receiver's packets over through two private attributes, which
``private`` reads or fails loudly on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
    sdp,
)
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

log = logging.getLogger("miscord.rtc")


def with_opus_parameters(
    description: RTCSessionDescription, parameters: Mapping[str, int]
) -> RTCSessionDescription:
    """``description`` with ``parameters`` in every Opus codec's fmtp (e.g.
    ``useinbandfec=1``, contract 1.1). aiortc writes no Opus parameters and
    matches codec preferences on exact parameters, so the description is
    changed, not the preferences."""
    parsed = sdp.SessionDescription.parse(description.sdp)
    for media in parsed.media:
        for codec in media.rtp.codecs:
            if codec.mimeType.lower() == "audio/opus":
                codec.parameters.update(parameters)
    return RTCSessionDescription(str(parsed), description.type)


#: seconds a peer connection's own close may take before the rest of its
#: teardown goes on without it
CLOSE_TIMEOUT = 5.0
#: RTCP feedback packets (NACK, REMB) being sent at once per receiver
PENDING_RTCP_LIMIT = 32
#: a forward step in sequence numbers past which a video stream's NACK
#: bookkeeping starts over instead of listing every number skipped
NACK_MAX_JUMP = 128


class UnsupportedAiortc(RuntimeError):
    """aiortc, aioice or pylibsrtp changed in a way this code does not know."""


def private(obj: object, owner: str, name: str) -> Any:
    """Read a name-mangled attribute or fail loudly."""
    try:
        return getattr(obj, f"_{owner}__{name}")
    except AttributeError:
        raise UnsupportedAiortc(f"{owner}.__{name} is missing") from None


def new_peer_connection(
    ice_servers: Iterable[RTCIceServer] = (), relay: bool = False
) -> RTCPeerConnection:
    """A peer connection with one bundled transport, these ICE servers only
    (aiortc adds a public STUN server unless told none) and, with ``relay``,
    relay candidates only."""
    policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
    return RTCPeerConnection(
        RTCConfiguration(
            iceServers=list(ice_servers),
            iceTransportPolicy=policy,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
    )


async def close_peer_connection(
    pc: RTCPeerConnection, hooks: Iterable[str] = ()
) -> None:
    """Close ``pc`` and take it apart so that reference counting frees it;
    ``hooks``: instance attributes put on its receivers and senders to drop.

    Closing is shielded: aiortc shares one future among concurrent ``close()``
    calls (it starts one itself when the remote end closes), and a cancelled
    awaiter would cancel that future and make aiortc's own close fail. It is
    bounded (``CLOSE_TIMEOUT``): a broken aiortc object never holds its owner.

    Then every cycle through the connection is cut: the event listeners aiortc
    leaves on its transports (bound methods of the pc), and the hooks. Left
    alone, each closed connection would wait for CPython's full collection,
    whose pause grows with the number of connections and stalls every call.
    """
    parts = [(t.receiver, t.sender, t.receiver.transport) for t in pc.getTransceivers()]
    protocols = [
        protocol
        for _, _, dtls in parts[:1]
        for protocol in dtls.transport._connection._protocols
    ]
    closing = asyncio.ensure_future(pc.close())
    try:
        await asyncio.wait_for(asyncio.shield(closing), CLOSE_TIMEOUT)
    except TimeoutError:
        # a stop that never returns (an aiortc task that died) is abandoned:
        # the rest of the teardown goes on, and so do aiortc's other waiters
        log.error("a peer connection did not close in %s s", CLOSE_TIMEOUT)
        closing.cancel()
        pending = getattr(pc, "_RTCPeerConnection__isClosed", None)
        if isinstance(pending, asyncio.Future) and not pending.done():
            pending.set_result(True)
    # A negotiation that raced close() may have started a receiver or sender
    # after close() stopped them: end their RTP/RTCP tasks before the transports
    # go, or they fail on a missing transport and their tracebacks keep them.
    leftovers = [
        task
        for receiver, sender, _ in parts
        for obj, name in (
            (receiver, "_RTCRtpReceiver__rtcp_task"),
            (sender, "_RTCRtpSender__rtp_task"),
            (sender, "_RTCRtpSender__rtcp_task"),
        )
        if (task := getattr(obj, name, None)) is not None and not task.done()
    ]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
    dropped = (*RawReceiver.HOOKS, Arrivals.ATTRIBUTE, *hooks)
    for receiver, sender, _ in parts:
        for obj in (receiver, sender):
            for attr in dropped:
                obj.__dict__.pop(attr, None)
        receiver.setTransport(None)  # type: ignore[arg-type]
        sender.setTransport(None)  # type: ignore[arg-type]
    for dtls in {id(d): d for _, _, d in parts}.values():  # bundled: usually one
        dtls.remove_all_listeners()
        dtls.transport.remove_all_listeners()
        dtls.transport.iceGatherer.remove_all_listeners()
        # aiortc's DTLS task ends in ``except Exception as exc: raise exc``: its
        # frame and the exception's traceback keep each other, and the frame
        # keeps this transport, until a full collection. Leave nothing behind it.
        dtls._ssl = dtls._rx_srtp = dtls._tx_srtp = None  # type: ignore[assignment]
        dtls._rtp_router = type(dtls._rtp_router)()
        dtls._transport = None  # type: ignore[assignment]
    for protocol in protocols:
        protocol.__dict__.pop("datagram_received", None)


class _NoDecoder:
    """Stands in for a receiver's decoder queue: its decoder thread exits at once
    and no decoder is ever created."""

    def get(self) -> None:
        return None

    def put(self, item: object) -> None:
        pass


PacketSink = Callable[[RtpPacket, RTCRtpCodecParameters], None]


def drop(packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
    """A sink that keeps nothing (a receiver whose m-line carries nothing)."""


class BoundedNackGenerator(NackGenerator):
    """aiortc's NACK generator, but a jump of more than ``NACK_MAX_JUMP``
    sequence numbers starts over: aiortc lists every number skipped, which a
    sender jumping 30,000 at a time turned into 30,000 set insertions per
    packet (and aiortc keeps only the last 128 anyway)."""

    def add(self, packet: RtpPacket) -> bool:
        if self.max_seq is not None:
            step = (packet.sequence_number - self.max_seq) & 0xFFFF
            if NACK_MAX_JUMP < step < 0x8000:
                self.missing.clear()
                self.max_seq = packet.sequence_number
                return False
        return super().add(packet)


#: seconds from the median beyond which a transit time is an RTP timestamp
#: that wrapped, not delay
WRAP_GUARD = 10.0


def relative_delay(transits: Iterable[float]) -> tuple[float, float] | None:
    """The median and 95th percentile (seconds) of packets' delay beyond the
    quickest one's, from their transit times (arrival minus RTP time, in
    seconds): the spread a jitter buffer has to hide. None below 20 packets."""
    values = sorted(transits)
    if len(values) < 20:
        return None
    middle = values[len(values) // 2]
    values = [v for v in values if abs(v - middle) < WRAP_GUARD]
    base = values[0]
    return values[len(values) // 2] - base, values[(len(values) - 1) * 95 // 100] - base


class Arrivals:
    """A decoding receiver's arrivals as its listener feels them: the transit
    times of its last packets (their spread is what the jitter buffer must
    hide; RFC 3550 jitter, over packets in order, misses reordering) and how
    many came behind a newer one. Reported in the client's ``stats``."""

    ATTRIBUTE = "_miscord_arrivals"
    KEPT = 256

    def __init__(self, receiver: RTCRtpReceiver, clockrate: int = 48000) -> None:
        self.clockrate = clockrate
        self.transits: collections.deque[float] = collections.deque(maxlen=self.KEPT)
        self.reordered = 0
        self.late = 0  # behind three or more newer packets
        self._highest: int | None = None
        self._handle = receiver._handle_rtp_packet
        receiver._handle_rtp_packet = self._on_rtp  # type: ignore[method-assign]
        setattr(receiver, self.ATTRIBUTE, self)

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.transits.append(arrival_time_ms / 1000 - packet.timestamp / self.clockrate)
        seq = packet.sequence_number
        behind = (self._highest - seq) & 0xFFFF if self._highest is not None else 0
        if 0 < behind < 0x8000:
            self.reordered += 1
            self.late += behind >= 3
        else:
            self._highest = seq
        await self._handle(packet, arrival_time_ms)

    def stats(self) -> dict[str, float]:
        """``relativeDelayP95`` (seconds), ``packetsReordered``, ``packetsLate``."""
        out: dict[str, float] = {
            "packetsReordered": self.reordered,
            "packetsLate": self.late,
        }
        delay = relative_delay(self.transits)
        if delay is not None:
            out["relativeDelayP95"] = round(delay[1], 4)
        return out


class RawReceiver:
    """Takes over an ``RTCRtpReceiver``'s RTP handling: every packet goes to
    ``sink`` as it arrived, before any jitter buffer, never decoded. The rest
    of what aiortc's receiver does is kept: reception statistics (so its
    receiver reports and getStats stay right), RTX unwrapped, padding-only
    probes dropped, and for video NACKs and REMB sent."""

    #: the attribute of a receiver that holds its hook (the two form a cycle the
    #: collector frees together; a weak-keyed map would never free them, its
    #: values holding their keys), and the receiver's methods it replaces
    ATTRIBUTE = "_miscord_hook"
    HOOKS = ("receive", "_handle_rtp_packet", ATTRIBUTE)

    def __init__(
        self, receiver: RTCRtpReceiver, kind: str, sink: PacketSink = drop
    ) -> None:
        self.receiver = receiver
        self.sink = sink
        self.rtcp_ssrc: int | None = None  # ours, once receiving starts
        self._pending: set[asyncio.Future[None]] = set()  # RTCP being sent
        video = kind == "video"
        self.nack = BoundedNackGenerator() if video else None
        self.remb = RemoteBitrateEstimator() if video else None
        self.codecs: dict[int, RTCRtpCodecParameters] = {}
        self.rtx_types: set[int] = set()  # payload types of RTX
        self.rtx_ssrc: dict[int, int] = {}  # RTX SSRC -> the media's
        self.streams: dict[int, StreamStatistics] = private(
            receiver, "RTCRtpReceiver", "remote_streams"
        )
        private(receiver, "RTCRtpReceiver", "decoder_queue")
        receiver._RTCRtpReceiver__decoder_queue = _NoDecoder()  # type: ignore[attr-defined]
        self._receive = receiver.receive
        receiver.receive = self._on_receive  # type: ignore[method-assign]
        receiver._handle_rtp_packet = self._on_rtp  # type: ignore[method-assign]
        setattr(receiver, self.ATTRIBUTE, self)

    async def _on_receive(self, parameters: RTCRtpReceiveParameters) -> None:
        for codec in parameters.codecs:
            if codec.payloadType is not None:
                self.codecs[codec.payloadType] = codec
        self.rtx_types = {pt for pt, codec in self.codecs.items() if is_rtx(codec)}
        for encoding in parameters.encodings:
            if encoding.rtx:
                self.rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        await self._receive(parameters)
        self.rtcp_ssrc = private(self.receiver, "RTCRtpReceiver", "rtcp_ssrc")

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.handle(packet)

    def new_stream(self, clockrate: int) -> StreamStatistics:
        """The statistics of an SSRC seen for the first time."""
        return StreamStatistics(clockrate)

    def received(self, packet: RtpPacket) -> None:
        """Every packet, counted, before RTX is unwrapped: the REMB estimate."""
        if self.remb is None or packet.extensions.abs_send_time is None:
            return
        remb = self.remb.add(
            abs_send_time=packet.extensions.abs_send_time,
            arrival_time_ms=int(time.time() * 1000),
            payload_size=len(packet.payload) + packet.padding_size,
            ssrc=packet.ssrc,
        )
        if remb is not None and self.rtcp_ssrc is not None:
            self.send_soon(
                RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=self.rtcp_ssrc,
                    media_ssrc=0,
                    fci=pack_remb_fci(*remb),
                )
            )

    def deliver(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        """A media packet (RTX unwrapped): NACK what is missing, then the sink."""
        if self.nack is not None and self.nack.add(packet) and self.rtcp_ssrc:
            nack = RtcpRtpfbPacket(
                fmt=RTCP_RTPFB_NACK, ssrc=self.rtcp_ssrc, media_ssrc=packet.ssrc
            )
            nack.lost = sorted(self.nack.missing)
            self.send_soon(nack)
        self.sink(packet, codec)

    def send_soon(self, packet: AnyRtcpPacket) -> None:
        """Send feedback without waiting; best effort (the next gap asks again)."""
        if len(self._pending) >= PENDING_RTCP_LIMIT:
            return
        task = asyncio.ensure_future(self.send_rtcp(packet))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def send_rtcp(self, packet: AnyRtcpPacket) -> None:
        await self.receiver._send_rtcp(packet)

    def handle(self, packet: RtpPacket) -> None:
        """One received RTP packet (after SRTP), before any jitter buffer."""
        if not self.receiver._enabled:
            return
        codec = self.codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self.streams.get(packet.ssrc)
        if stream is None:
            stream = self.streams[packet.ssrc] = self.new_stream(codec.clockRate)
        stream.add(packet)
        self.received(packet)
        if packet.payload_type in self.rtx_types:
            original = self.rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original is None or len(packet.payload) < 2 or apt not in self.codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
            codec = self.codecs[apt]
        if packet.payload:  # padding-only probes carry no media
            self.deliver(packet, codec)
