"""A publish connection's packets, from the socket to the C fast path, and
what the server keeps of every connection's arrivals.

``ActivityProbe`` wraps a connection's sockets: it notes when anything last
arrived, gates what reaches Python (negotiated SSRCs, a datagram budget) and
takes a publisher's RTP straight to C. ``ReceiveHook`` takes over a receiver
(``miscord_client.rtc.RawReceiver``, with C's statistics, NACKs and REMB for
video) and hands its packets to the publication.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtpPacket,
    unpack_header_extensions,
)

from miscord_client.rtc import PacketSink, RawReceiver, drop, private, relative_delay

from ..native import ffi, lib
from .counters import count_rx
from .ice import PROBE_ATTRIBUTE, log
from .rtcp import receive_srtcp
from .srtp import SCRATCH

RECEIVE_QUEUE_LIMIT = 512  # datagrams waiting for aiortc's DTLS task
#: RTP and RTCP datagrams per second Python takes off one connection, by its
#: inline kind; C drops the rest (a flood costs Python nothing past this). A
#: screen share's video, RTX and RTCP fit with room to spare, and a keyframe's
#: burst fits the bucket (one second deep).
PYTHON_RATE = {"rtp": 2000.0, "rtcp": 500.0}
#: SSRCs a publish connection may send beyond those its offers declare, each
#: admitted once a packet of it authenticates (a client that declares none, a
#: changed SSRC); RTP of any other SSRC is dropped in C, before SRTP
SSRC_MARGIN = 6


class ActivityProbe:
    """When a datagram (STUN, DTLS, SRTP) last arrived on a peer connection.

    With ``inline`` it also takes one kind of packet straight off the socket,
    instead of through aiortc's queue, task hop and per-packet datetime
    arithmetic: ``"rtp"`` on a publish connection (unprotect, parse, route to
    the receiver's ``ReceiveHook`` and forward, all in the datagram callback;
    once a publication's SSRC is routed to C, ``rx``, C reads it off the socket
    too, with no Python per packet), ``"rtcp"`` on a fast-path subscribe
    connection (unprotect and read the report blocks in C, hand them or the
    parsed feedback to the sender it is about). Everything else takes aiortc's
    path.

    It is also the connection's gate: only the SSRCs a publish connection
    negotiated (``admit``, and ``SSRC_MARGIN`` more) get past C, and Python
    takes at most ``PYTHON_RATE`` RTP/RTCP datagrams a second of it.
    """

    def __init__(self, owner: str = "") -> None:
        self.owner = owner  # whose connection, for the logs
        self._last_rx = time.monotonic()
        self.dropped = 0  # datagrams refused because aiortc's queue was full
        #: the SSRCs C takes off this connection's sockets (``fan_ingest``)
        self.rx = ffi.new("struct fan_rx *")
        self.rx.margin = SSRC_MARGIN
        self._drained_counted = (0, 0)
        self._wrapped: set[int] = set()
        self._refusal_logged = False

    def admit(self, ssrcs: Iterable[int]) -> None:
        """SSRCs a publish offer declared: C takes their RTP."""
        for ssrc in ssrcs:
            lib.fan_admit(self.rx, ssrc, 1)

    def note_refusals(self) -> None:
        """Log, once per connection, that RTP of an SSRC was refused."""
        rx = self.rx
        if rx.refused_ssrc and not self._refusal_logged:
            self._refusal_logged = True
            log.warning(
                "%s sends RTP of SSRC %d, which it did not negotiate: dropping it "
                "(counted as ssrcsRefused)",
                self.owner,
                rx.refused_last,
            )

    @property
    def last_rx(self) -> float:
        """Monotonic seconds when the last datagram arrived (C reads some)."""
        return max(self._last_rx, self.rx.last_at)

    def watch(
        self, pc: RTCPeerConnection, inline: Literal["rtp", "rtcp"] | None = None
    ) -> None:
        """Wrap the receive side of every gathered socket of ``pc`` (idempotent)."""
        self.rx.py_rate = PYTHON_RATE.get(inline or "", 0.0)
        for transceiver in pc.getTransceivers():
            dtls = transceiver.receiver.transport
            connection = dtls.transport._connection
            setattr(connection, PROBE_ATTRIBUTE, self)
            for protocol in connection._protocols:
                if id(protocol) in self._wrapped:
                    continue
                self._wrapped.add(id(protocol))
                received = self._receiver(protocol, dtls, inline)
                protocol.datagram_received = received  # type: ignore[method-assign,assignment]
                if inline == "rtp":
                    self._read_in_c(protocol, dtls)

    def _receiver(
        self, protocol: Any, dtls: RTCDtlsTransport, inline: str | None
    ) -> Callable[[bytes, tuple[Any, ...]], None]:
        original = protocol.datagram_received
        component = protocol.local_candidate.component
        queue = protocol.receiver._queue
        # the ids object is the map's own, updated in place on renegotiation
        ids = (
            private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
            if inline == "rtp"
            else None
        )

        rx = self.rx

        def received(data: bytes, addr: tuple[Any, ...]) -> None:
            now = self._last_rx = time.monotonic()
            if not data or not 127 < data[0] < 192:  # STUN, DTLS
                original(data, addr)
                return
            rtcp = len(data) > 1 and 191 < data[1] < 209  # RTCP packet types
            if inline == "rtp" and not rtcp and dtls._rx_srtp is not None:
                receive_srtp(dtls, ids, data, self)  # C spends the budget
            elif not lib.fan_python(rx, now):
                return  # over this connection's budget
            elif inline == "rtcp" and dtls._rx_srtp is not None:
                if rtcp:
                    receive_srtcp(dtls, data)
                # RTP from a subscriber: it sends none on this connection
            elif queue.qsize() < RECEIVE_QUEUE_LIMIT:
                # aiortc's receive queue is unbounded: a peer flooding us faster
                # than we read gets its excess dropped, like a full socket would
                protocol.receiver.data_received(data, component)  # no STUN parse
            else:
                self.dropped += 1

        return received

    def _read_in_c(self, protocol: Any, dtls: RTCDtlsTransport) -> None:
        """Take over the socket's reader from asyncio: C reads and forwards all
        the routed RTP waiting (``fan_drain``), instead of one datagram per
        event-loop turn through asyncio's reader and ``received``; anything else
        is still read by asyncio's reader, one datagram at a time."""
        transport = protocol.transport
        fd = transport._sock_fd
        read_one = transport._read_ready
        ids = private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
        rx = self.rx
        done = lib.FAN_EMPTY | lib.FAN_PASS

        def ready() -> None:
            srtp = dtls._rx_srtp
            if srtp is not None:
                session, level_id = srtp._srtp[0], ids.audio_level or -1
                while not (flags := lib.fan_drain(rx, fd, session, level_id)) & done:
                    left_by_c(dtls, ids, rx, flags)
                packets, octets = self._drained_counted
                count_rx(dtls, rx.drained - packets, rx.drained_bytes - octets)
                self._drained_counted = (rx.drained, rx.drained_bytes)
                self.note_refusals()
                if flags & lib.FAN_EMPTY:
                    return
            read_one()

        transport._add_reader(fd, ready)  # not on a closing transport


#: an RTP fixed header without CSRCs (RFC 3550 5.1)
RTP_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


def parse_rtp(data: bytes, ids: Any) -> RtpPacket:
    """aiortc's ``RtpPacket.parse`` keeping only the header extensions the
    forwarding reads (audio level, abs-send-time; ``ids`` names their ids):
    decoding every extension of every packet was a fifth of a received
    packet's Python. Raises ValueError on a malformed packet."""
    size = len(data)
    if size < 12:
        raise ValueError("RTP packet shorter than its header")
    first, second, seq, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("not RTP version 2")
    packet = RtpPacket(second & 0x7F, second >> 7, seq, timestamp, ssrc)
    count = first & 0x0F
    pos = 12 + 4 * count
    if count:
        if size < pos:
            raise ValueError("RTP packet has truncated CSRC")
        packet.csrc = list(struct.unpack_from(f"!{count}I", data, 12))
    if first & 0x10:
        if size < pos + 4:
            raise ValueError("RTP packet has truncated extension header")
        profile, words = _EXTENSION_HEADER.unpack_from(data, pos)
        pos += 4
        end = pos + 4 * words
        if size < end:
            raise ValueError("RTP packet has truncated extensions")
        extensions = packet.extensions
        for x_id, value in unpack_header_extensions(profile, data[pos:end]):
            if x_id == ids.audio_level and value:
                extensions.audio_level = (value[0] > 0x7F, value[0] & 0x7F)
            elif x_id == ids.abs_send_time and len(value) == 3:
                extensions.abs_send_time = int.from_bytes(value, "big")
        pos = end
    if first & 0x20:
        padding = data[-1]
        if not padding or padding > size - pos:
            raise ValueError("RTP packet padding length is invalid")
        packet.padding_size = padding
        packet.payload = data[pos:-padding]
    else:
        packet.payload = data[pos:]
    return packet


def hook_of(dtls: RTCDtlsTransport, packet: RtpPacket) -> ReceiveHook | None:
    """The hook of the receiver aiortc routes ``packet`` to, if any."""
    receiver = dtls._rtp_router.route_rtp(packet)
    return getattr(receiver, RawReceiver.ATTRIBUTE, None)


def receive_srtp(
    dtls: RTCDtlsTransport, ids: Any, data: bytes, probe: ActivityProbe
) -> None:
    """A publisher's RTP: in C if its SSRC is routed there (``fan_ingest``:
    unprotect, parse, statistics, levels, fan-out), else here, which routes
    the SSRC to C for the next packet when its publication allows. C drops an
    SSRC the connection may not send, and what is over Python's budget; a new
    SSRC within the margin is admitted here once its packet authenticates."""
    rx = probe.rx
    session = dtls._rx_srtp._srtp[0]
    flags = lib.fan_ingest(rx, session, data, len(data), ids.audio_level or -1)
    if flags & lib.FAN_DROP:
        probe.note_refusals()
        return
    if not flags & lib.FAN_PASS:
        count_rx(dtls, 1, len(data))
        if flags:
            left_by_c(dtls, ids, rx, flags)
        return
    plain = SCRATCH.unprotect(session, data)
    if plain is None:
        return
    try:
        packet = parse_rtp(plain, ids)
    except ValueError:
        return
    if lib.fan_admit(rx, packet.ssrc, 0):
        return  # the margin ran out (or the table is full)
    count_rx(dtls, 1, len(data))
    hook = hook_of(dtls, packet)
    if hook is not None:
        hook.handle(packet)
        hook.route(rx, packet)


def left_by_c(dtls: RTCDtlsTransport, ids: Any, rx: Any, flags: int) -> None:
    """A packet C forwarded with work left for Python (a first packet, a
    subscriber to start or resync, a gap): its publication's to finish."""
    try:
        packet = parse_rtp(ffi.buffer(rx.plain, rx.plain_len)[:], ids)
    except ValueError:
        return
    hook = hook_of(dtls, packet)
    if hook is not None and hook.publication is not None:
        hook.publication.after_native(flags, packet)


class NativeSink(Protocol):
    """A publication as its receiver's hook sees it: ``native`` is its ``struct
    fan_publication``, which C forwards with; ``after_native`` takes what C leaves."""

    native: Any

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None: ...

    def after_native(self, flags: int, packet: RtpPacket) -> None: ...


class NativeStreamStatistics(StreamStatistics):
    """aiortc's reception statistics of one SSRC, counted in C (``struct
    fan_stream``) so that the packets C takes and those Python takes count in
    one place; aiortc's receiver reports and getStats read it as before."""

    def __init__(self, clockrate: int) -> None:
        self.native = ffi.new("struct fan_stream *")
        self.native.clockrate = self._clockrate = clockrate
        self._expected_prior = 0
        self._received_prior = 0

    def add(self, packet: RtpPacket) -> None:
        lib.fan_stream_add(self.native, packet.sequence_number, packet.timestamp)

    @property
    def base_seq(self) -> int | None:  # type: ignore[override]
        return self.native.base_seq if self.native.has_base else None

    @property
    def max_seq(self) -> int | None:  # type: ignore[override]
        return self.native.max_seq if self.native.has_max else None

    @property
    def cycles(self) -> int:  # type: ignore[override]
        return self.native.cycles

    @property
    def packets_received(self) -> int:  # type: ignore[override]
        return self.native.packets_received

    @property
    def _jitter_q4(self) -> int:  # type: ignore[override]
        return self.native.jitter_q4

    def arrival(self) -> dict[str, float | int | None]:
        """How packets arrive, beyond RFC 3550 jitter (which skips those out of
        order): counts of reordered and late packets, loss bursts, and the
        recent packets' delay beyond the quickest one's (seconds, median and
        95th percentile over up to ``FAN_TRANSITS`` packets): what a
        listener's jitter buffer has to hide."""
        native = self.native
        count = min(native.transits_n, lib.FAN_TRANSITS)
        delay = relative_delay(native.transits[i] / 1e6 for i in range(count))
        median, p95 = delay if delay is not None else (None, None)
        return {
            "packetsReordered": native.reordered,
            "packetsLate": native.late,
            "burstLossCount": native.gaps,
            "burstPacketsLost": native.gap_packets,
            "relativeDelayMedian": median,
            "relativeDelayP95": p95,
        }


class ReceiveHook(RawReceiver):
    """A publication's receiver: its packets counted in C, every packet handed
    to the publication (``publish_to``), and audio routed to C after its first
    packet (``route``)."""

    def __init__(
        self, receiver: RTCRtpReceiver, kind: str, sink: PacketSink = drop
    ) -> None:
        super().__init__(receiver, kind, sink)
        self.publication: NativeSink | None = None
        self._rx: Any = None  # where C takes this receiver's SSRC (``route``)

    def new_stream(self, clockrate: int) -> StreamStatistics:
        return NativeStreamStatistics(clockrate)

    def publish_to(self, publication: NativeSink | None) -> None:
        """Hand every packet to ``publication`` from now on (None: drop them)."""
        if self._rx is not None and self.publication is not None:
            lib.fan_unroute(self._rx, self.publication.native)
        self._rx = None
        self.publication = publication
        self.sink = drop if publication is None else publication.on_packet

    def route(self, rx: Any, packet: RtpPacket) -> None:
        """Let C (``rx``) take ``packet``'s SSRC from the next packet on: audio
        only (video wants NACKs, REMB and keyframe checks here), never RTX."""
        stream = self.streams.get(packet.ssrc)
        if (
            self.publication is None
            or self.nack is not None
            or packet.payload_type in self.rtx_types
            or not isinstance(stream, NativeStreamStatistics)
        ):
            return
        pub = self.publication.native
        ssrc, pt = packet.ssrc, packet.payload_type
        if lib.fan_route(rx, ssrc, pt, stream.native, pub) == 0:
            self._rx = rx

    async def request_keyframe(self) -> bool:
        """Send a PLI for every SSRC this receiver has seen; False if none yet."""
        if self.rtcp_ssrc is None or not self.streams:
            return False
        for ssrc in list(self.streams):
            if ssrc not in self.rtx_ssrc:
                await self.send_rtcp(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=ssrc
                    )
                )
        return True
