"""The one module that reaches into aiortc and aioice internals.

aiortc has no public way to (a) receive RTP without decoding it, (b) send
already-packetized RTP without a track and a per-sender task, (c) choose the
addresses ICE gathers on, or (d) see when the last datagram arrived. Everything
that needs private attributes for that lives here, behind small functions, and
``check_compatibility()`` refuses to run on an aiortc, aioice or pylibsrtp
version this code was not tested against (``TESTED``), so an upgrade fails loudly
at start instead of silently degrading.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Protocol

import aioice
import aioice.ice
import aioice.stun
import pylibsrtp
import pylibsrtp._binding
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    clock,
)
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_header_extensions,
    unwrap_rtx,
)
from aiortc.sdp import candidate_from_sdp
from aiortc.stats import (
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCStatsReport,
)
from pylibsrtp import Policy, Session

from ._fanout_native import ffi as native_ffi
from ._fanout_native import lib as native_lib

_voice_log = logging.getLogger("miscord.voice")

#: versions of the packages whose internals this module uses, as tested
TESTED = {"aiortc": ("1.16.0",), "aioice": ("0.13.0",), "pylibsrtp": ("1.0.0",)}


class UnsupportedAiortc(RuntimeError):
    """aiortc, aioice or pylibsrtp changed in a way this seam does not know."""


def installed_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in TESTED}


def check_compatibility(versions: dict[str, str] | None = None) -> None:
    """Refuse to run on a version of a package whose internals we use untested."""
    versions = versions or installed_versions()
    for name, tested in TESTED.items():
        if versions.get(name) not in tested:
            raise UnsupportedAiortc(
                f"{name} {versions.get(name)} is not a tested version (tested: "
                f"{', '.join(tested)}); sfu/aiortc_seam.py must be checked against it "
                "before use"
            )
    for cls, attrs in _REQUIRED.items():
        for attr in attrs:
            if not hasattr(cls, attr):
                raise UnsupportedAiortc(f"{cls.__name__}.{attr} is missing")


_REQUIRED: dict[type, tuple[str, ...]] = {
    RTCRtpReceiver: ("_handle_rtp_packet", "_send_rtcp", "receive", "_run_rtcp"),
    RTCRtpSender: ("_handle_rtcp_packet", "send", "stop", "getStats"),
    RTCDtlsTransport: (
        "_register_rtp_sender",
        "_unregister_rtp_sender",
        "_send_rtp",
        "_get_stats",
    ),
    aioice.ice.Connection: ("recv", "sendto", "build_request", "query_consent"),
}


async def selftest() -> None:
    """Check the private instance attributes this module uses on a real
    (unconnected) peer connection; raises ``UnsupportedAiortc``."""
    pc = new_peer_connection()
    try:
        transceiver = pc.addTransceiver("audio", direction="sendonly")
        for attr in ("_codecs", "_headerExtensions"):
            if not hasattr(transceiver, attr):
                raise UnsupportedAiortc(f"RTCRtpTransceiver.{attr} is missing")
        for name in ("remote_streams", "decoder_queue", "rtcp_ssrc", "rtcp_task"):
            _private(transceiver.receiver, "RTCRtpReceiver", name)
        for name in ("rtp_task", "rtcp_task"):
            _private(transceiver.sender, "RTCRtpSender", name)
        dtls = transceiver.sender.transport
        for name in ("tx_bytes", "tx_packets"):
            _private(dtls, "RTCDtlsTransport", name)
        for attr in ("_tx_srtp", "_stats_id"):
            if not hasattr(dtls, attr):
                raise UnsupportedAiortc(f"RTCDtlsTransport.{attr} is missing")
        connection = dtls.transport._connection
        for attr in ("_nominated", "_protocols", "_queue"):
            if not hasattr(connection, attr):
                raise UnsupportedAiortc(f"aioice Connection.{attr} is missing")
        if not hasattr(transceiver.sender, "_ssrc") or not hasattr(
            transceiver.sender, "_rtx_ssrc"
        ):
            raise UnsupportedAiortc("RTCRtpSender._ssrc / _rtx_ssrc are missing")
        for attr in ("_rx_srtp", "_rtp_router", "_rtp_header_extensions_map"):
            if not hasattr(dtls, attr):
                raise UnsupportedAiortc(f"RTCDtlsTransport.{attr} is missing")
        ids = _private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
        for attr in ("audio_level", "abs_send_time"):
            if not hasattr(ids, attr):
                raise UnsupportedAiortc(f"HeaderExtensions.{attr} is missing")
        session = pylibsrtp.Session()
        if not hasattr(session, "_srtp"):
            raise UnsupportedAiortc("pylibsrtp.Session._srtp is missing")
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        raw = getattr(udp, "_sock", None)
        udp.close()
        if raw is None or not hasattr(raw, "sendto"):
            raise UnsupportedAiortc("asyncio datagram transports have no _sock")
    finally:
        await pc.close()


def _private(obj: object, owner: str, name: str) -> Any:
    """Read a name-mangled attribute or fail loudly."""
    try:
        return getattr(obj, f"_{owner}__{name}")
    except AttributeError:
        raise UnsupportedAiortc(f"{owner}.__{name} is missing") from None


# --- ICE ------------------------------------------------------------------------

_ice_hosts: list[str] = []


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [
        h for h in _ice_hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)
    ]


_aioice_host_addresses = aioice.ice.get_host_addresses


def configure_ice(hosts: list[str], consent_interval: float | None = None) -> None:
    """Gather host candidates on exactly ``hosts`` (all machine addresses if empty).

    aioice leaves 127.0.0.1 out of its host addresses, so a loopback-only
    deployment (and every test) needs this. Process-wide, like aioice's own
    setting. ``consent_interval`` shortens RFC 7675 consent checks so that a peer
    that vanished is noticed within seconds instead of half a minute.
    """
    _ice_hosts[:] = hosts
    aioice.ice.get_host_addresses = _host_addresses if hosts else _aioice_host_addresses
    if consent_interval is not None:
        aioice.ice.CONSENT_INTERVAL = consent_interval


#: RFC 7675: a STUN check refreshes consent at least this often, whatever else
#: the peer sends (its recommended interval; consent expires after 30 s)
CONSENT_FRESHNESS = 5.0
#: the attribute of an aioice Connection that holds its ActivityProbe
PROBE_ATTRIBUTE = "_miscord_probe"


async def _query_consent(self: aioice.ice.Connection) -> None:
    """aioice's consent loop (RFC 7675), changed twice. It never starts on a
    closing connection: aioice 0.13 starts it at the end of ``connect()`` even
    when ``close()`` ran meanwhile, and it then sleeps forever. And a check is
    skipped while the peer was heard from within half the interval (its
    ActivityProbe; the answer to the last check is older than that), except every
    ``CONSENT_FRESHNESS`` seconds: the short interval is there to notice a silent
    peer within seconds, and a talking one needs no check per second (32 a
    second at 16 participants, a few % of the server's CPU)."""
    if self._closing:
        return
    failures = 0
    checked = time.monotonic()
    while True:
        interval = aioice.ice.CONSENT_INTERVAL
        await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
        now = time.monotonic()
        probe = getattr(self, PROBE_ATTRIBUTE, None)
        if (
            probe is not None
            and now - probe.last_rx < interval / 2
            and now - checked < CONSENT_FRESHNESS
        ):
            continue
        checked = now
        for pair in self._nominated.values():
            request = self.build_request(pair, nominate=False)
            try:
                await pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=self.remote_password.encode("utf8"),
                    retransmissions=0,
                )
                failures = 0
            except aioice.stun.TransactionError:
                failures += 1
            if failures >= aioice.ice.CONSENT_FAILURES:
                self._Connection__log_info("Consent to send expired")  # type: ignore[attr-defined]
                self._query_consent_task = None
                return await self.close()


aioice.ice.Connection.query_consent = _query_consent  # type: ignore[method-assign]


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection with no STUN server and one bundled transport."""
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


#: seconds a peer connection's own close may take before the rest of its
#: teardown goes on without it
CLOSE_TIMEOUT = 5.0


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` and take it apart so that reference counting frees it.

    Closing is shielded: aiortc shares one future among concurrent ``close()``
    calls (it starts one itself when the remote end closes), and a cancelled
    awaiter would cancel that future and make aiortc's own close fail. It is
    bounded (``CLOSE_TIMEOUT``): a broken aiortc object never holds a seat.

    Then every cycle through the connection is cut: the event listeners aiortc
    leaves on its transports (bound methods of the pc), and every hook this
    module put on receivers, senders and sockets. Left alone, each closed
    connection would wait for CPython's full collection, whose pause grows with
    the number of connections and stalls every call on the server.
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
        _voice_log.error("a peer connection did not close in %s s", CLOSE_TIMEOUT)
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
    for receiver, sender, _ in parts:
        for obj, attrs in ((receiver, _RECEIVER_HOOKS), (sender, _SENDER_HOOKS)):
            for attr in attrs:
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
        dtls._ssl = dtls._rx_srtp = dtls._tx_srtp = None
        dtls._rtp_router = type(dtls._rtp_router)()
        dtls._transport = None
    for protocol in protocols:
        protocol.__dict__.pop("datagram_received", None)


_RECEIVER_HOOKS = ("receive", "_handle_rtp_packet", "_miscord_hook")
_SENDER_HOOKS = ("send", "stop", "getStats", "_handle_rtcp_packet")


def parse_candidate(candidate: dict[str, Any]) -> RTCIceCandidate | None:
    """A trickled browser candidate, or None for one we refuse (mDNS ``.local``).

    Raises ValueError for text that is not a candidate.
    """
    text = candidate["candidate"]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    try:
        parsed = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError) as exc:
        raise ValueError(f"not an ICE candidate: {exc or 'too few fields'}") from None
    if parsed.protocol.lower() not in ("udp", "tcp") or not 0 < parsed.port < 65536:
        raise ValueError("candidate has an unknown protocol or an invalid port")
    if parsed.ip.endswith(".local"):
        return None
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed


PROTECT_MAX = 1500  # the largest RTP packet the fast path protects (an MTU)


class SrtpScratch:
    """The buffer libsrtp protects and unprotects in, in place, shared by every
    session: the event loop runs one packet at a time and each use ends (its
    result copied or sent) before the next begins. Calling libsrtp directly
    skips pylibsrtp's wrappers, which allocate and check per packet and cost
    more than the cipher; one buffer for all keeps the per-packet path's
    memory small."""

    def __init__(self) -> None:
        self.cdata = _ffi.new("char[]", PROTECT_MAX + pylibsrtp.SRTP_MAX_TRAILER_LEN)
        self.buffer = _ffi.buffer(self.cdata)
        self.view = memoryview(self.buffer)
        self.length = _ffi.new("int *")

    def protect(
        self, session: Any, data: bytes, protect: Any = None
    ) -> memoryview | None:
        """``data`` protected by ``session`` (an ``srtp_t``), valid until the
        next use; None if it is too long or libsrtp refuses it. ``protect`` is
        libsrtp's function for SRTCP, else SRTP."""
        size = len(data)
        if size > PROTECT_MAX:
            return None
        self.buffer[0:size] = data
        self.length[0] = size
        if (protect or _srtp_protect)(session, self.cdata, self.length):
            return None
        return self.view[: self.length[0]]

    def unprotect(self, session: Any, data: bytes) -> bytes | None:
        """``data`` authenticated and decrypted, or None (too long, replayed,
        forged)."""
        size = len(data)
        if size > len(self.buffer):
            return None
        self.buffer[0:size] = data
        self.length[0] = size
        if _srtp_unprotect(session, self.cdata, self.length):
            return None
        return self.buffer[0 : self.length[0]]


_srtp_protect = pylibsrtp._binding.lib.srtp_protect
_srtp_protect_rtcp = pylibsrtp._binding.lib.srtp_protect_rtcp
_srtp_unprotect = pylibsrtp._binding.lib.srtp_unprotect
_ffi = pylibsrtp._binding.ffi
_SCRATCH = SrtpScratch()


def _address(pointer: Any) -> int:
    return int(_ffi.cast("uintptr_t", pointer))


# the C fan-out protects through pylibsrtp's own libsrtp (no second copy of it)
native_lib.fan_init(
    _address(_ffi.addressof(pylibsrtp._binding.lib, "srtp_protect")),
    _address(_ffi.addressof(pylibsrtp._binding.lib, "srtp_unprotect")),
    _address(_ffi.addressof(pylibsrtp._binding.lib, "srtp_unprotect_rtcp")),
)


RECEIVE_QUEUE_LIMIT = 512  # datagrams waiting for aiortc's DTLS task
PENDING_RTCP_LIMIT = 32  # NACK/REMB sends in flight per receiver
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
        self.rx = native_ffi.new("struct fan_rx *")
        self.rx.margin = SSRC_MARGIN
        self._drained_counted = (0, 0)
        self._wrapped: set[int] = set()
        self._refusal_logged = False

    def admit(self, ssrcs: Iterable[int]) -> None:
        """SSRCs a publish offer declared: C takes their RTP."""
        for ssrc in ssrcs:
            native_lib.fan_admit(self.rx, ssrc, 1)

    def note_refusals(self) -> None:
        """Log, once per connection, that RTP of an SSRC was refused."""
        rx = self.rx
        if rx.refused_ssrc and not self._refusal_logged:
            self._refusal_logged = True
            _voice_log.warning(
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
                protocol.datagram_received = self._receiver(protocol, dtls, inline)
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
            _private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
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
                _receive_srtp(dtls, ids, data, self)  # C spends the budget
            elif not native_lib.fan_python(rx, now):
                return  # over this connection's budget
            elif inline == "rtcp" and dtls._rx_srtp is not None:
                if rtcp:
                    _receive_srtcp(dtls, data)
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
        ids = _private(dtls._rtp_header_extensions_map, "HeaderExtensionsMap", "ids")
        rx = self.rx
        done = native_lib.FAN_EMPTY | native_lib.FAN_PASS

        def ready() -> None:
            srtp = dtls._rx_srtp
            if srtp is not None:
                session, level_id = srtp._srtp[0], ids.audio_level or -1
                while (
                    not (flags := native_lib.fan_drain(rx, fd, session, level_id))
                    & done
                ):
                    _left_by_c(dtls, ids, rx, flags)
                packets, octets = self._drained_counted
                _count_rx(dtls, rx.drained - packets, rx.drained_bytes - octets)
                self._drained_counted = (rx.drained, rx.drained_bytes)
                self.note_refusals()
                if flags & native_lib.FAN_EMPTY:
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


def _count_rx(dtls: RTCDtlsTransport, packets: int, octets: int) -> None:
    """What arrived past aiortc's transport, added to its W3C counters."""
    dtls._RTCDtlsTransport__rx_packets += packets  # type: ignore[attr-defined]
    dtls._RTCDtlsTransport__rx_bytes += octets  # type: ignore[attr-defined]


def _hook_of(dtls: RTCDtlsTransport, packet: RtpPacket) -> ReceiveHook | None:
    return getattr(dtls._rtp_router.route_rtp(packet), HOOK_ATTRIBUTE, None)


def _receive_srtp(
    dtls: RTCDtlsTransport, ids: Any, data: bytes, probe: ActivityProbe
) -> None:
    """A publisher's RTP: in C if its SSRC is routed there (``fan_ingest``:
    unprotect, parse, statistics, levels, fan-out), else here, which routes
    the SSRC to C for the next packet when its publication allows. C drops an
    SSRC the connection may not send, and what is over Python's budget; a new
    SSRC within the margin is admitted here once its packet authenticates."""
    rx = probe.rx
    session = dtls._rx_srtp._srtp[0]
    flags = native_lib.fan_ingest(rx, session, data, len(data), ids.audio_level or -1)
    if flags & native_lib.FAN_DROP:
        probe.note_refusals()
        return
    if not flags & native_lib.FAN_PASS:
        _count_rx(dtls, 1, len(data))
        if flags:
            _left_by_c(dtls, ids, rx, flags)
        return
    plain = _SCRATCH.unprotect(session, data)
    if plain is None:
        return
    try:
        packet = parse_rtp(plain, ids)
    except ValueError:
        return
    if native_lib.fan_admit(rx, packet.ssrc, 0):
        return  # the margin ran out (or the table is full)
    _count_rx(dtls, 1, len(data))
    hook = _hook_of(dtls, packet)
    if hook is not None:
        hook.handle(packet)
        hook.route(rx, packet)


def _left_by_c(dtls: RTCDtlsTransport, ids: Any, rx: Any, flags: int) -> None:
    """A packet C forwarded with work left for Python (a first packet, a
    subscriber to start or resync, a gap): its publication's to finish."""
    try:
        packet = parse_rtp(native_ffi.buffer(rx.plain, rx.plain_len)[:], ids)
    except ValueError:
        return
    hook = _hook_of(dtls, packet)
    if hook is not None and hook.publication is not None:
        hook.publication.after_native(flags, packet)


#: where a subscriber's SRTCP is unprotected and its report blocks read
_RTCP = native_ffi.new("struct fan_rtcp *")


def _receive_srtcp(dtls: RTCDtlsTransport, data: bytes) -> None:
    """aiortc's SRTCP handling on a subscribe connection, without its queue and
    task hop: the fast path's senders get each packet in this call. Receiver
    reports and NACKs, nearly all of it, are read in C (``fan_rtcp_scan``) and
    handed over as report blocks and NACK items (each answered in C); the other
    feedback is parsed by aiortc. aiortc's receivers there carry nothing (the
    client only receives), so what is routed to them (an SR, a BYE) is dropped."""
    rtcp = _RTCP
    flags = native_lib.fan_rtcp_scan(rtcp, dtls._rx_srtp._srtp[0], data, len(data))
    if flags & native_lib.FAN_DROP:
        return
    _count_rx(dtls, 1, len(data))
    senders = dtls._rtp_router.senders
    if rtcp.count:
        wall = time.time()
        for i in range(rtcp.count):
            block = rtcp.blocks + i
            report = getattr(senders.get(block.ssrc), "report", None)
            if report is not None:
                report(block, wall)
    for i in range(rtcp.nacks):
        item = rtcp.nack[i]
        nack = getattr(senders.get(item.media_ssrc), "nack", None)
        if nack is not None:
            nack(item.pid, item.blp, bool(item.first))
    if flags & native_lib.FAN_PASS:
        try:
            packets = RtcpPacket.parse(native_ffi.buffer(rtcp.plain, rtcp.plain_len)[:])
        except ValueError:
            return
        for packet in packets:
            for recipient in dtls._rtp_router.route_rtcp(packet):
                handle = getattr(recipient, "handle_rtcp", None)
                if handle is not None:
                    handle(packet)


def ice_transport_of(pc: RTCPeerConnection) -> Any:
    transceivers = pc.getTransceivers()
    return transceivers[0].receiver.transport.transport if transceivers else None


def selected_pair(pc: RTCPeerConnection) -> dict[str, Any] | None:
    """The nominated candidate pair, in W3C candidate-pair terms."""
    ice = ice_transport_of(pc)
    pair = ice._connection._nominated.get(1) if ice is not None else None
    if pair is None:
        return None
    local, remote = pair.local_candidate, pair.remote_candidate
    return {
        "state": "succeeded",
        "nominated": True,
        "localCandidate": f"{local.host}:{local.port} {local.type}",
        "remoteCandidate": f"{remote.host}:{remote.port} {remote.type}",
    }


# --- receiving without decoding ---------------------------------------------------


class _NoDecoder:
    """Stands in for a receiver's decoder queue: its decoder thread exits at once
    and no decoder is ever created."""

    def get(self) -> None:
        return None

    def put(self, item: object) -> None:
        pass


PacketSink = Callable[[RtpPacket, RTCRtpCodecParameters], None]


def _drop(packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
    """The sink of a receiver whose source is not published (a stopped m-line)."""


class NativeSink(Protocol):
    """A publication as its receiver's hook sees it: ``native`` is its ``struct
    fan_pub``, which C forwards with; ``after_native`` takes what C leaves."""

    native: Any

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None: ...

    def after_native(self, flags: int, packet: RtpPacket) -> None: ...


class NativeStreamStatistics(StreamStatistics):
    """aiortc's reception statistics of one SSRC, counted in C (``struct
    fan_stream``) so that the packets C takes and those Python takes count in
    one place; aiortc's receiver reports and getStats read it as before."""

    def __init__(self, clockrate: int) -> None:
        self.native = native_ffi.new("struct fan_stream *")
        self.native.clockrate = self._clockrate = clockrate
        self._expected_prior = 0
        self._received_prior = 0

    def add(self, packet: RtpPacket) -> None:
        native_lib.fan_stream_add(self.native, packet.sequence_number, packet.timestamp)

    @property  # type: ignore[override]
    def base_seq(self) -> int | None:
        return self.native.base_seq if self.native.has_base else None

    @property  # type: ignore[override]
    def max_seq(self) -> int | None:
        return self.native.max_seq if self.native.has_max else None

    @property  # type: ignore[override]
    def cycles(self) -> int:
        return self.native.cycles

    @property  # type: ignore[override]
    def packets_received(self) -> int:
        return self.native.packets_received

    @property  # type: ignore[override]
    def _jitter_q4(self) -> int:
        return self.native.jitter_q4


#: a forward step in sequence numbers past which a video stream's NACK
#: bookkeeping starts over instead of listing every number skipped
NACK_MAX_JUMP = 128


class BoundedNackGenerator(NackGenerator):
    """aiortc's NACK generator, but a jump of more than ``NACK_MAX_JUMP``
    sequence numbers starts over: aiortc lists every number skipped, which a
    publisher jumping 30,000 at a time turned into 30,000 set insertions per
    packet (and aiortc keeps only the last 128 anyway)."""

    def add(self, packet: RtpPacket) -> bool:
        if self.max_seq is not None:
            step = (packet.sequence_number - self.max_seq) & 0xFFFF
            if NACK_MAX_JUMP < step < 0x8000:
                self.missing.clear()
                self.max_seq = packet.sequence_number
                return False
        return super().add(packet)


#: the attribute of an RTCRtpReceiver that holds its ReceiveHook (the two form a
#: cycle the garbage collector frees together; a weak-keyed map would never
#: free them, its values holding their keys)
HOOK_ATTRIBUTE = "_miscord_hook"


class ReceiveHook:
    """Takes over an ``RTCRtpReceiver``'s RTP handling: RTP statistics (so aiortc's
    receiver reports and getStats stay right), RTX unwrapping, NACKs and REMB for
    video, then hands every packet to ``sink`` before any jitter buffer."""

    def __init__(
        self, receiver: RTCRtpReceiver, kind: str, sink: PacketSink = _drop
    ) -> None:
        self.receiver = receiver
        self.sink = sink
        self.publication: NativeSink | None = None
        self._rx: Any = None  # where C takes this receiver's SSRC (``route``)
        self.codecs: dict[int, RTCRtpCodecParameters] = {}
        self.rtx_types: set[int] = set()  # payload types of RTX
        self.rtx_ssrc: dict[int, int] = {}
        self.streams: dict[int, StreamStatistics] = _private(
            receiver, "RTCRtpReceiver", "remote_streams"
        )
        self.rtcp_ssrc: int | None = None
        self._pending: set[asyncio.Future[None]] = set()  # RTCP being sent
        video = kind == "video"
        self.nack = BoundedNackGenerator() if video else None
        self.remb = RemoteBitrateEstimator() if video else None
        _private(receiver, "RTCRtpReceiver", "decoder_queue")
        receiver._RTCRtpReceiver__decoder_queue = _NoDecoder()  # type: ignore[attr-defined]
        self._receive = receiver.receive
        receiver.receive = self._on_receive  # type: ignore[method-assign]
        receiver._handle_rtp_packet = self._on_rtp  # type: ignore[method-assign]
        setattr(receiver, HOOK_ATTRIBUTE, self)

    async def _on_receive(self, parameters: RTCRtpReceiveParameters) -> None:
        for codec in parameters.codecs:
            self.codecs[codec.payloadType] = codec
        self.rtx_types = {pt for pt, codec in self.codecs.items() if is_rtx(codec)}
        for encoding in parameters.encodings:
            if encoding.rtx:
                self.rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        await self._receive(parameters)
        self.rtcp_ssrc = _private(self.receiver, "RTCRtpReceiver", "rtcp_ssrc")

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        self.handle(packet)

    def handle(self, packet: RtpPacket) -> None:
        """One received RTP packet (after SRTP), before any jitter buffer."""
        if not self.receiver._enabled:
            return
        codec = self.codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self.streams.get(packet.ssrc)
        if stream is None:
            stream = self.streams[packet.ssrc] = NativeStreamStatistics(codec.clockRate)
        stream.add(packet)
        if self.remb is not None and packet.extensions.abs_send_time is not None:
            remb = self.remb.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=int(time.time() * 1000),
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None and self.rtcp_ssrc is not None:
                self._send_soon(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP,
                        ssrc=self.rtcp_ssrc,
                        media_ssrc=0,
                        fci=pack_remb_fci(*remb),
                    )
                )
        if packet.payload_type in self.rtx_types:
            original = self.rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original is None or len(packet.payload) < 2 or apt not in self.codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
            codec = self.codecs[apt]
        if not packet.payload:
            return  # padding-only probes carry no media
        if self.nack is not None and self.nack.add(packet) and self.rtcp_ssrc:
            nack = RtcpRtpfbPacket(
                fmt=RTCP_RTPFB_NACK, ssrc=self.rtcp_ssrc, media_ssrc=packet.ssrc
            )
            nack.lost = sorted(self.nack.missing)
            self._send_soon(nack)
        self.sink(packet, codec)

    def publish_to(self, publication: NativeSink | None) -> None:
        """Hand every packet to ``publication`` from now on (None: drop them)."""
        if self._rx is not None and self.publication is not None:
            native_lib.fan_unroute(self._rx, self.publication.native)
        self._rx = None
        self.publication = publication
        self.sink = _drop if publication is None else publication.on_packet

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
        if native_lib.fan_route(rx, ssrc, pt, stream.native, pub) == 0:
            self._rx = rx

    def _send_soon(self, packet: AnyRtcpPacket) -> None:
        if len(self._pending) >= PENDING_RTCP_LIMIT:
            return  # feedback is best effort; the next gap asks again
        task = asyncio.ensure_future(self.send_rtcp(packet))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def send_rtcp(self, packet: AnyRtcpPacket) -> None:
        await self.receiver._send_rtcp(packet)

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


# --- sending without a track ------------------------------------------------------


def _connect_once(sock: Any, addr: tuple[Any, ...]) -> None:
    """Connect a subscriber's UDP socket to its nominated peer: the fast path's
    ``send`` then skips the per-packet address and route lookups (aioice keeps
    using ``sendto`` with that same address, which a connected socket allows)."""
    try:
        peer = sock.getpeername()
    except OSError:
        peer = None
    if peer is None:
        sock.connect(addr)
    elif peer[:2] != addr[:2]:
        raise UnsupportedAiortc(f"ICE socket connected to {peer}, nominated {addr}")


class SocketDups:
    """One duplicate descriptor per ICE socket, shared by the senders on it
    (every m-line of a bundled pc): the C fan-out sends on it, so a socket
    aioice closes can never be replaced by another behind the C side's back.
    Closed with its last user."""

    def __init__(self) -> None:
        #: id of a socket (alive: each user holds it) -> [duplicate, users]
        self._dups: dict[int, list[int]] = {}

    def acquire(self, sock: Any) -> int:
        entry = self._dups.setdefault(id(sock), [-1, 0])
        if entry[0] < 0:
            entry[0] = os.dup(sock.fileno())
        entry[1] += 1
        return entry[0]

    def release(self, sock: Any) -> None:
        entry = self._dups[id(sock)]
        entry[1] -= 1
        if not entry[1]:
            os.close(entry[0])
            del self._dups[id(sock)]

    def __len__(self) -> int:
        return len(self._dups)


_SOCKET_DUPS = SocketDups()


def _ignore_parameters(parameters: RTCRtpSendParameters) -> None:
    """What a detached SendHook does when aiortc renegotiates its sender."""


class _Released:
    """The owner of a detached SendHook: ignores the RTCP still addressed to it."""

    _ssrc = 0

    def handle_rtcp(self, packet: AnyRtcpPacket) -> None:
        pass

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        pass


_RELEASED = _Released()


class RtcpSink(Protocol):
    """What a SendHook's owner is to aiortc's RTCP router (``_ssrc``, the
    coroutine aiortc awaits) and to the inline path (``handle_rtcp``)."""

    _ssrc: int

    def handle_rtcp(self, packet: AnyRtcpPacket) -> None: ...

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None: ...


def own_session(dtls: RTCDtlsTransport, ssrc: int) -> Session:
    """An SRTP session for ``ssrc``'s RTP alone, keyed as aiortc keyed the
    transport's sending session (RFC 5764 4.2: the same keying material,
    exported again from the DTLS session). libsrtp looks every packet's SSRC up
    in its session's list of streams, which in a session shared by 15 senders
    cost about 1 µs per packet, cold in cache; here it is the only stream. Only
    this session ever protects that SSRC's RTP, and C never gives it one index
    for two different packets (``struct fan_sub``), so no keystream is used
    twice; SRTCP has keys of its own and stays in aiortc's session, like RTX."""
    selected = dtls._ssl.get_selected_srtp_profile()
    profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == selected)
    material = dtls._ssl.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
    )
    key = profile.get_key_and_salt(material, 1 if dtls._role == "server" else 0)
    policy = Policy(
        key=key,
        ssrc_type=Policy.SSRC_SPECIFIC,
        ssrc_value=ssrc,
        srtp_profile=profile.libsrtp_profile,
    )
    # a NACK resends an index, byte for byte; C refuses any other repeat
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


class SendHook:
    """Takes over an ``RTCRtpSender``: aiortc still negotiates it (SSRC, codecs,
    header extensions, mid) but never starts its RTP/RTCP tasks; instead
    ``owner`` is configured with the negotiated parameters, receives the RTCP
    aimed at the sender's SSRC, answers getStats, and writes SRTP straight to the
    nominated ICE socket (``send``, and the C fan-out through ``target``: its
    SRTP session and a duplicate of the socket this hook owns, so the C side
    never holds a descriptor aioice may have closed and reused)."""

    def __init__(
        self,
        sender: RTCRtpSender,
        owner: RtcpSink,
        configure: Callable[[RTCRtpSendParameters], None],
        stats: Callable[[], list[Any]],
        target: Any,
    ) -> None:
        self.sender = sender
        self.ssrc: int = sender._ssrc
        self.rtx_ssrc: int = sender._rtx_ssrc
        self._owner = owner
        self._configure = configure
        self._stats = stats
        self._registered: RTCDtlsTransport | None = None
        self.srtp: Any = None
        self.socket: Any = None
        self.addr: Any = None
        self.dropped = 0
        self._srtp_t: Any = None  # aiortc's session: SRTCP, and RTX (in C)
        #: this sender's own SRTP session, for its SSRC's RTP (``own_session``)
        self._own: tuple[RTCDtlsTransport, Session] | None = None
        self._target = target  # a ``struct fan_sub *``
        target.fd = -1
        sender.send = self._on_send  # type: ignore[method-assign]
        sender.stop = self._on_stop  # type: ignore[method-assign]
        sender.getStats = self._on_get_stats  # type: ignore[method-assign]

    @property
    def ready(self) -> bool:
        return self.socket is not None

    async def _on_send(self, parameters: RTCRtpSendParameters) -> None:
        if self._owner is _RELEASED:
            return  # aiortc connecting a pc already closed: nothing to take
        transport = self.sender.transport
        if self._registered is not transport:
            transport._register_rtp_sender(self._owner, parameters)
            self._registered = transport
        pair = transport.transport._connection._nominated.get(1)
        if pair is not None and transport._tx_srtp is not None:
            self.srtp = transport._tx_srtp
            self._srtp_t = self.srtp._srtp[0]
            if self._own is None or self._own[0] is not transport:
                self._own = (transport, own_session(transport, self.ssrc))
            socket, self.addr = pair.protocol.transport._sock, pair.remote_addr
            _connect_once(socket, self.addr)
            if socket is not self.socket:
                self._release_target()
                self.socket = socket
                self._target.fd = _SOCKET_DUPS.acquire(socket)
            own = _address(self._own[1]._srtp[0])
            self._target.srtp = native_ffi.cast("void *", own)
            self._target.rtx_srtp = native_ffi.cast("void *", _address(self._srtp_t))
            self._target.rtx_ssrc = self.rtx_ssrc
        self._configure(parameters)

    async def _on_stop(self) -> None:
        self.detach()

    def detach(self) -> None:
        """Stop sending and let go of the owner (no cycle outlives the m-line)."""
        if self._registered is not None:
            self._registered._unregister_rtp_sender(self._owner)
            self._registered = None
        self._release_target()
        self.socket = self.srtp = self._own = None
        self._owner = _RELEASED
        self._configure = _ignore_parameters
        self._stats = list

    def _release_target(self) -> None:
        target = self._target
        target.active = 0
        target.srtp = target.rtx_srtp = native_ffi.NULL
        target.fd = -1
        if self.socket is not None:
            _SOCKET_DUPS.release(self.socket)

    async def _on_get_stats(self) -> RTCStatsReport:
        """aiortc's getStats() shape, from the owner's W3C dictionaries."""
        report = RTCStatsReport()
        transport = self.sender.transport
        now = clock.current_datetime()
        for item in self._stats():
            common = {
                "timestamp": now,
                "type": item["type"],
                "id": item["id"],
                "ssrc": item["ssrc"],
                "kind": item["kind"],
                "transportId": transport._stats_id,
            }
            if item["type"] == "outbound-rtp":
                report.add(
                    RTCOutboundRtpStreamStats(
                        **common,
                        packetsSent=item["packetsSent"],
                        bytesSent=item["bytesSent"],
                        trackId=str(id(self.sender)),
                    )
                )
            else:
                report.add(
                    RTCRemoteInboundRtpStreamStats(
                        **common,
                        packetsReceived=item["packetsReceived"],
                        packetsLost=item["packetsLost"],
                        jitter=item["jitter"],
                        roundTripTime=item["roundTripTime"],
                        fractionLost=item["fractionLost"],
                    )
                )
        report.update(transport._get_stats())
        return report

    def send_rtcp(self, data: bytes) -> None:
        """Protect and send one compound RTCP packet, counted for getStats.

        libsrtp works in ``SrtpScratch`` and the datagram goes to the raw
        socket: the Python wrappers around both cost more than the encryption
        and the system call themselves. A full socket buffer or an SRTP
        refusal drops it (``dropped``): UDP never blocks.
        """
        if self.socket is None:
            return
        protected = _SCRATCH.protect(self._srtp_t, data, _srtp_protect_rtcp)
        sent = 0
        if protected is not None:
            with contextlib.suppress(OSError):
                sent = self.socket.send(protected)
        if not sent:
            self.dropped += 1
        self.count_sent(1, sent)

    def count_sent(self, packets: int, octets: int) -> None:
        """Keep the transport's W3C counters true for what bypassed it."""
        transport = self.sender.transport
        transport._RTCDtlsTransport__tx_packets += packets  # type: ignore[attr-defined]
        transport._RTCDtlsTransport__tx_bytes += octets  # type: ignore[attr-defined]


def intercept_rtcp(
    sender: RTCRtpSender, on_packet: Callable[[AnyRtcpPacket], Awaitable[None]]
) -> None:
    """Let ``on_packet`` see a track-path sender's RTCP before aiortc does (aiortc
    drops PLIs on its pre-encoded path)."""
    original = sender._handle_rtcp_packet

    async def handle(packet: AnyRtcpPacket) -> None:
        await on_packet(packet)
        await original(packet)

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def restrict_codecs(
    transceiver: RTCRtpTransceiver, keep: RTCRtpCodecParameters
) -> None:
    """Answer with one codec (and its RTX) so the publisher sends only that one."""
    transceiver._codecs = [
        c
        for c in transceiver._codecs
        if c.payloadType == keep.payloadType
        or (is_rtx(c) and c.parameters.get("apt") == keep.payloadType)
    ]
