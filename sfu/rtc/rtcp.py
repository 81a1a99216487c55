"""RTCP on a subscribe connection: what subscribers send (read in C, handed to
the senders it is about) and the sender reports the fast path sends them."""

from __future__ import annotations

import struct
import time
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpPacket, RtcpReceiverInfo

from ..native import ffi, lib
from .counters import count_rx

#: bytes of one compound RTCP packet: what pylibsrtp protects (1500 less its
#: 148-byte trailer reserve), with room to spare
RTCP_COMPOUND_MAX = 1200
#: an RTCP sender report without report blocks (RFC 3550 6.4.1): 7 words
SENDER_REPORT = struct.Struct("!BBHIIIIII")
RTCP_SR, RTCP_SDES = 200, 202


def sdes_packet(ssrc: int, cname: bytes) -> bytes:
    """An SDES packet of one chunk (RFC 3550 6.5): the SSRC, its CNAME item and
    the null octets that end the list and pad it to 32 bits. One chunk per
    packet, since aiortc's parser misreads the padding between chunks."""
    items = bytes((1, len(cname))) + cname
    chunk = struct.pack("!I", ssrc) + items + b"\0" * (4 - len(items) % 4)
    return struct.pack("!BBH", 0x81, RTCP_SDES, len(chunk) // 4) + chunk


def compound_reports(reports: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Sender reports with their SDES packets as compound RTCP packets (RFC
    3550 6.1: SRs first, then the CNAMEs), as many SRs per packet as fit in
    ``RTCP_COMPOUND_MAX``: a subscriber of 20 streams needs more than one."""
    packets: list[bytes] = []
    srs: list[bytes] = []
    sdes: list[bytes] = []
    size = 0
    for report, names in reports:
        if size + len(report) + len(names) > RTCP_COMPOUND_MAX:
            packets.append(b"".join(srs + sdes))
            srs, sdes, size = [], [], 0
        srs.append(report)
        sdes.append(names)
        size += len(report) + len(names)
    if srs:
        packets.append(b"".join(srs + sdes))
    return packets


def report_block(report: RtcpReceiverInfo) -> Any:
    """An RTCP report block aiortc parsed, as C keeps it (``struct fan_block``)."""
    fields = (report.ssrc, report.fraction_lost, report.packets_lost)
    rest = (report.highest_sequence, report.jitter, report.lsr, report.dlsr)
    return ffi.new("struct fan_block *", (*fields, *rest))


#: where a subscriber's SRTCP is unprotected and read (one packet at a time)
_RTCP = ffi.new("struct fan_rtcp *")


def receive_srtcp(dtls: RTCDtlsTransport, data: bytes) -> None:
    """aiortc's SRTCP handling on a subscribe connection, without its queue and
    task hop: the fast path's senders get each packet in this call. Receiver
    reports and NACKs, nearly all of it, are read in C (``fan_rtcp_scan``) and
    handed over as report blocks and NACK items (each answered in C); the other
    feedback is parsed by aiortc. aiortc's receivers there carry nothing (the
    client only receives), so what is routed to them (an SR, a BYE) is dropped."""
    rtcp = _RTCP
    flags = lib.fan_rtcp_scan(rtcp, dtls._rx_srtp._srtp[0], data, len(data))
    if flags & lib.FAN_DROP:
        return
    count_rx(dtls, 1, len(data))
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
    if flags & lib.FAN_PASS:
        try:
            packets = RtcpPacket.parse(ffi.buffer(rtcp.plain, rtcp.plain_len)[:])
        except ValueError:
            return
        for packet in packets:
            for recipient in dtls._rtp_router.route_rtcp(packet):
                handle = getattr(recipient, "handle_rtcp", None)
                if handle is not None:
                    handle(packet)
