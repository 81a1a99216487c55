"""A subscriber m-line's sender, taken over for the fast path.

aiortc still negotiates the sender (SSRC, codecs, header extensions, mid) but
never starts its RTP/RTCP tasks: ``SendHook`` configures the downlink with the
negotiated parameters, hands it the RTCP aimed at its SSRC, answers getStats
from its W3C dictionaries, and gives C what it sends with: the SRTP sessions
and a duplicate of the nominated ICE socket.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiortc import RTCRtpSender, clock
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import AnyRtcpPacket
from aiortc.stats import (
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCStatsReport,
)
from pylibsrtp import Session

from miscord_client.rtc import UnsupportedAiortc

from ..native import ffi
from .counters import count_tx
from .srtp import SCRATCH, address, own_session, srtp_protect_rtcp


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
        self._target = target  # a ``struct fan_downlink *``
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
            socket = pair.protocol.transport._sock  # type: ignore[attr-defined]
            self.addr = pair.remote_addr
            _connect_once(socket, self.addr)
            if socket is not self.socket:
                self._release_target()
                self.socket = socket
                self._target.fd = _SOCKET_DUPS.acquire(socket)
            own = address(self._own[1]._srtp[0])
            self._target.srtp = ffi.cast("void *", own)
            self._target.rtx_srtp = ffi.cast("void *", address(self._srtp_t))
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
        target.srtp = target.rtx_srtp = ffi.NULL
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
        protected = SCRATCH.protect(self._srtp_t, data, srtp_protect_rtcp)
        sent = 0
        if protected is not None:
            with contextlib.suppress(OSError):
                sent = self.socket.send(protected)
        if not sent:
            self.dropped += 1
        self.count_sent(1, sent)

    def count_sent(self, packets: int, octets: int) -> None:
        """Keep the transport's W3C counters true for what bypassed it."""
        count_tx(self.sender.transport, packets, octets)


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
