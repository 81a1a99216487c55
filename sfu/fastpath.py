"""The fast path: forward a received RTP packet to every subscriber in one call.

A ``FastDownlink`` is one m-line of a subscriber's subscribe connection; a
publication's ``FastDownlinks`` holds its downlinks. For every packet, one call into
C (``fanout.c``) rewrites the header for each subscriber in sync (SSRC,
sequence number and timestamp offsets, payload type, header extensions as the
subscriber negotiated them), SRTP-protects it and writes it to the ICE socket:
no queue, task, track, frame or Python object per subscriber. (For audio the
same C call also took the packet off the publisher's socket: see
``sfu.rtc.inbound``.) Python takes what is rare: a stream's
start or restart, a viewer waiting for a keyframe, gaps. It also does what
aiortc's sender did: sender reports, RTT and loss from the subscriber's receiver
reports, and W3C getStats counters. NACKs are answered in C (``fan_nack``):
each packet at most once per RTT, from the publication's history, within a
byte budget the stream itself earns; C also keeps each subscriber's SRTP
indexes unique (see ``struct fan_downlink``).
"""

from __future__ import annotations

import logging
import random
import struct
import time
from bisect import bisect_right
from collections import deque
from typing import Any

from aiortc import RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)

from .downlink import Downlink
from .keyframes import is_keyframe
from .native import ffi, lib
from .rtc.outbound import SendHook
from .rtc.rtcp import RTCP_SR, SENDER_REPORT, report_block, sdes_packet
from .sdp_check import codec_key

log = logging.getLogger("miscord.voice")
screen_log = logging.getLogger("miscord.screen")

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
#: seconds a new viewer waits for a keyframe before asking again
KEYFRAME_RETRY = 1.5
#: RTP ticks one frame advances, used when a stream restarts right away
FRAME_TICKS = {"audio": 960, "video": 3000}
#: upstream gaps remembered to reconcile receiver reports with (per downlink)
GAP_MARKS = 1024


def one_byte_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """An RFC 8285 one-byte header extension block (0xBEDE), padded to 32 bits."""
    body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body if body else b""


def packet_args(packet: RtpPacket) -> tuple[bytes, int, int, int, int, int, int]:
    """``packet`` as the C functions take it: payload, its size, marker,
    sequence number, timestamp, SSRC and the RFC 6464 level byte (V bit and
    -dBov) or -1."""
    level = packet.extensions.audio_level
    return (
        packet.payload,
        len(packet.payload),
        packet.marker,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
        -1 if level is None else (level[0] << 7) | level[1],
    )


class FastDownlinks:
    """The fast-path subscribers of one publication (``pub``, its ``struct
    fan_publication``): C sends each packet to every subscriber in sync with the
    stream; Python takes the rest (a first packet, a resync, a viewer waiting
    for a keyframe) and records gaps. The NACK history is kept in C once for
    all subscribers, as received: a retransmission is rewritten when asked
    (``fan_nack``)."""

    def __init__(self, pub: Any) -> None:
        self.downlinks: list[FastDownlink] = []
        self._pub = pub
        self._targets: Any = ffi.NULL

    def add(self, downlink: FastDownlink) -> None:
        self.downlinks.append(downlink)
        self._rebuild()

    def remove(self, downlink: FastDownlink) -> None:
        self.downlinks.remove(downlink)
        self._rebuild()

    def _rebuild(self) -> None:
        targets = [downlink.native for downlink in self.downlinks]
        self._targets = ffi.new("struct fan_downlink *[]", targets)
        self._pub.subs = self._targets
        self._pub.count = len(targets)

    def finish(self, flags: int, packet: RtpPacket) -> None:
        """What C's fan-out of ``packet`` left to Python (its ``flags``)."""
        if flags & lib.FAN_SKIPPED:
            for downlink in self.downlinks:
                if downlink.native.skipped:
                    downlink.write(packet)
        if flags & lib.FAN_GAP:
            for downlink in self.downlinks:
                if downlink.native.gap_pending:
                    downlink.record_gap()


class FastDownlink(Downlink):
    """One subscriber m-line on the fast path (see module docstring). Its
    sending state lives in ``native`` (a ``struct fan_downlink``, see
    ``fanout.h``), which the C loop reads and counts in."""

    def __init__(self, transceiver: RTCRtpTransceiver, kind: str, viewer: str) -> None:
        super().__init__(transceiver, kind, viewer)
        self.native = ffi.new("struct fan_downlink *")
        self.native.rtx_seq = random.randint(0, 0x7FFF)
        self.hook = SendHook(
            transceiver.sender, self, self._configure, self.stats, self.native
        )
        self._ssrc = self.native.ssrc = self.hook.ssrc  # aiortc's RTCP router
        #: this m-line's SDES packet (its CNAME), sent with each sender report
        self.sdes = b""
        self._codecs: list[RTCRtpCodecParameters] = []
        self._pt: int | None = None
        self._rtx_pt = 0
        #: the header extension blocks: without the level, with it, its offset
        self._extensions: tuple[bytes, bytes, int] = (b"", b"", 0)
        self._clock = 48000 if kind == "audio" else 90000
        #: video starts at a keyframe: delta frames before it cannot be decoded
        self._awaiting_keyframe = False
        self._awaiting_since = 0.0
        # counters (W3C names in stats()); the per-packet ones are in ``native``
        self._wire_packets_counted = 0
        self._wire_bytes_counted = 0
        #: (extended sequence number after a gap, gaps up to it): what a
        #: receiver report that reached a sequence number counts of upstream loss
        self._gap_marks: deque[tuple[int, int]] = deque(maxlen=GAP_MARKS)
        self._gaps_before_marks = 0
        self.pli_count = 0
        self.fir_count = 0
        self.remb_bitrate: int | None = None

    @property
    def packets_sent(self) -> int:
        return self.native.packets_sent

    @property
    def bytes_sent(self) -> int:
        return self.native.bytes_sent

    @property
    def gaps_forwarded(self) -> int:
        """Sequence numbers skipped in what we forwarded (lost upstream)."""
        return self.native.gaps

    # --- negotiation and binding ------------------------------------------------

    def _configure(self, parameters: RTCRtpSendParameters) -> None:
        self.sdes = sdes_packet(self._ssrc, (parameters.rtcp.cname or "").encode())
        self._codecs = list(parameters.codecs)
        ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
        mid_id, muxid = ids.get(MID_URI), parameters.muxId
        mid = [(mid_id, muxid.encode())] if mid_id and muxid else []
        plain = one_byte_extensions(mid)
        level_id = ids.get(LEVEL_URI, 0) if self.kind == "audio" else 0
        full = one_byte_extensions([*mid, (level_id, b"\0")]) if level_id else b""
        # the level byte is the only part that changes per packet
        level_at = 4 + sum(1 + len(v) for _, v in mid) + 1
        self._extensions = (plain, full, level_at)
        self._select_payload_types()
        if self._awaiting_keyframe and self.hook.ready and self.publication is not None:
            # the first moment this viewer can receive: ask for a picture now
            self._awaiting_since = time.monotonic()
            self._ask_keyframe()

    def bind(self, publication: Any) -> None:
        self.publication = publication
        self.native.active = 0  # C anchors it to this publication's first packet
        self._awaiting_keyframe = self.kind == "video"
        self._awaiting_since = time.monotonic()
        self._select_payload_types()
        if self._awaiting_keyframe and self.hook.ready:
            self._ask_keyframe()  # else once the viewer's transport is up

    def unbind(self) -> None:
        self._pt = None
        self.native.active = 0

    def _select_payload_types(self) -> None:
        self._pt, self._rtx_pt = None, 0
        self.native.active = 0  # until write() sees a payload type again
        if self.publication is not None:
            wanted = codec_key(self.publication.codec)
            for codec in self._codecs:
                if not is_rtx(codec) and codec_key(codec) == wanted:
                    self._pt = codec.payloadType
                    break
            for codec in self._codecs:
                if is_rtx(codec) and codec.parameters.get("apt") == self._pt:
                    self._rtx_pt = codec.payloadType or 0
        self._apply_header()

    def _apply_header(self) -> None:
        """What every packet's header carries, to C (which refuses to resend
        anything sent under an older header)."""
        plain, full, level_at = self._extensions
        lib.fan_header(
            self.native,
            self._pt or 0,
            self._rtx_pt,
            plain,
            len(plain),
            full,
            len(full),
            level_at if full else 0,
        )

    # --- the packets the C loop skipped ------------------------------------------

    def write(self, packet: RtpPacket) -> None:
        """A packet the C loop did not send to this subscriber: start (or
        restart) the stream here, then hand it to the C loop for good."""
        if self._pt is None or not self.hook.ready:
            return
        if self._awaiting_keyframe and not self._keyframe_starts(packet):
            return
        native, pub = self.native, self.publication.native
        if not lib.fan_bound(native, pub):
            self._resync(packet)
        one = ffi.new("struct fan_downlink *[]", [native])
        payload, size, marker, _, ts, _, level = packet_args(packet)
        flags = lib.fan_out(pub, one, 1, payload, size, marker, ts, level, pub.last_at)
        if flags & lib.FAN_GAP:
            self.record_gap()

    def record_gap(self) -> None:
        native = self.native
        native.gap_pending = 0
        marks = self._gap_marks
        if len(marks) == marks.maxlen:
            self._gaps_before_marks = marks[0][1]
        marks.append((native.top, native.gaps))

    def _gaps_up_to(self, ext_seq: int) -> int:
        """Upstream gaps among the sequence numbers up to ``ext_seq``."""
        marks = self._gap_marks
        i = bisect_right(marks, ext_seq, key=lambda mark: mark[0])
        return marks[i - 1][1] if i else self._gaps_before_marks

    def _keyframe_starts(self, packet: RtpPacket) -> bool:
        """While waiting for a keyframe: is this its first packet? (asks again if
        none came for a while)"""
        pub = self.publication
        if is_keyframe(pub.codec.mimeType, packet.payload):
            self._awaiting_keyframe = False
            screen_log.info(
                "first keyframe of %s/%s to viewer %s after %.0f ms",
                pub.peer_id,
                pub.source,
                self.viewer,
                (time.monotonic() - self._awaiting_since) * 1000,
            )
            return True
        if time.monotonic() - self._awaiting_since > KEYFRAME_RETRY:
            self._awaiting_since = time.monotonic()
            self._ask_keyframe()
        return False

    def _resync(self, packet: RtpPacket) -> None:
        """Choose offsets so the outgoing stream continues where it left off:
        C numbers it on from the highest index sent (``fan_anchor``), and
        nothing this m-line sent before can be sent again under new offsets."""
        native = self.native
        if native.packets_sent:
            elapsed = int((time.monotonic() - native.last_at) * self._clock)
            out_ts = native.last_ts + max(elapsed, FRAME_TICKS[self.kind])
        else:
            out_ts = random.getrandbits(32)
        native.ts_off = (out_ts - packet.timestamp) & 0xFFFFFFFF
        lib.fan_anchor(native, self.publication.native, random.randint(0, 0x7FFF))

    # --- RTCP -------------------------------------------------------------------------

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        self.handle_rtcp(packet)

    def handle_rtcp(self, packet: AnyRtcpPacket) -> None:
        """RTCP from the subscriber about this m-line (see module docstring)."""
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for r in packet.reports:
                if r.ssrc == self._ssrc:
                    self.report(report_block(r), time.time())
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            # a NACK C did not read (aiortc's routing): aiortc's expansion of
            # its items may run past 16 bits (a PID near 0xFFFF)
            for n, seq in enumerate(packet.lost):
                self.nack(seq & 0xFFFF, 0, first=n == 0)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
            RTCP_PSFB_PLI,
            RTCP_PSFB_FIR,
        ):
            if packet.fmt == RTCP_PSFB_PLI:
                self.pli_count += 1
            else:
                self.fir_count += 1
            if self.publication is not None:
                self._ask_keyframe()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._ssrc in ssrcs:
                self.remb_bitrate = bitrate

    def nack(self, pid: int, blp: int, first: bool = False) -> None:
        """A generic NACK item (RFC 4585 6.2.1) about this m-line (``first``
        of its NACK packet): C resends what this binding sent and may resend
        (``fan_nack``)."""
        if first:
            self.native.nack_count += 1
        pub = self.publication
        if pub is not None:
            lib.fan_nack(pub.native, self.native, pid, blp, time.monotonic())

    def report(self, block: Any, wall: float) -> None:
        """A receiver report block about this m-line (a ``struct fan_block *``)
        that arrived at ``wall``: C keeps it and the RTT it gives."""
        lib.fan_report(self.native, block, wall)

    @property
    def rtt(self) -> float | None:
        """Smoothed round-trip time from the subscriber's reports, seconds."""
        return self.native.rtt if self.native.rtt_count else None

    @property
    def remote(self) -> dict[str, Any] | None:
        """The subscriber's latest report, as W3C remote-inbound-rtp fields."""
        native = self.native
        if not native.reports:
            return None
        report = native.report
        # the report counts from the first sequence number it saw, ours
        expected = ((report.highest - native.first) & 0xFFFFFFFF) + 1
        return {
            "timestamp": native.report_at,
            "packetsLost": report.lost,
            "packetsReceived": max(0, expected - report.lost),
            "highestSequenceNumber": report.highest,
            # of packetsLost, those that never reached us (not W3C)
            "packetsMissingUpstream": self._gaps_up_to(report.highest),
            "fractionLost": report.fraction / 256,
            "jitter": report.jitter / self._clock,
        }

    def sender_report(self, ntp: int, now: float, wall: float) -> bytes | None:
        """An SR for the subscriber at NTP time ``ntp`` (monotonic ``now``,
        wall clock ``wall``), with the RTP time extrapolated to then."""
        native = self.native
        if not native.packets_sent:
            return None
        ticks = int((now - native.last_at) * self._clock)
        lib.fan_sr_sent(native, (ntp >> 16) & 0xFFFFFFFF, wall)
        return SENDER_REPORT.pack(
            0x80,
            RTCP_SR,
            6,
            self._ssrc,
            ntp >> 32,
            ntp & 0xFFFFFFFF,
            (native.last_ts + ticks) & 0xFFFFFFFF,
            native.packets_sent & 0xFFFFFFFF,
            native.bytes_sent & 0xFFFFFFFF,
        )

    def flush_transport_counters(self) -> None:
        """Add what bypassed aiortc's transport to its W3C counters."""
        native = self.native
        packets = native.packets_sent + native.retransmitted_packets
        wire_bytes = native.wire_bytes + native.retransmitted_wire
        delta_p = packets - self._wire_packets_counted
        delta_b = wire_bytes - self._wire_bytes_counted
        if delta_p or delta_b:
            self.hook.count_sent(delta_p, delta_b)
            self._wire_packets_counted, self._wire_bytes_counted = packets, wire_bytes

    # --- stats ----------------------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        """outbound-rtp (and remote-inbound-rtp once the subscriber reported)."""
        native = self.native
        items: list[dict[str, Any]] = [
            {
                "type": "outbound-rtp",
                "id": f"outbound-rtp_{self._ssrc}",
                "ssrc": self._ssrc,
                "kind": self.kind,
                "mid": self.mid,
                "packetsSent": self.packets_sent,
                "bytesSent": self.bytes_sent,
                "retransmittedPacketsSent": native.retransmitted_packets,
                "retransmittedBytesSent": native.retransmitted_bytes,
                "nackCount": native.nack_count,
                "pliCount": self.pli_count,
                "firCount": self.fir_count,
                # not W3C: what the fast path refused, and why
                "packetsMissingUpstream": self.gaps_forwarded,
                "nackRefused": {
                    "unknown": native.nack_unknown,
                    "repeated": native.nack_repeated,
                    "overBudget": native.nack_over_budget,
                },
                "indexRefused": native.refused_index,
            }
        ]
        if self.remote is not None:
            items.append(
                {
                    "type": "remote-inbound-rtp",
                    "id": f"remote-inbound-rtp_{self._ssrc}",
                    "ssrc": self._ssrc,
                    "kind": self.kind,
                    "localId": f"outbound-rtp_{self._ssrc}",
                    "roundTripTime": self.rtt,
                    "totalRoundTripTime": self.native.rtt_total,
                    "roundTripTimeMeasurements": self.native.rtt_count,
                    **self.remote,
                }
            )
        return items

    def close(self) -> None:
        self.unbind()
        self.hook.detach()
