"""What an attacker does, done the way an attacker would: a test client that
rewrites its own packets before SRTP protects them (a real client can send
anything its keys can protect), or sends RTCP of its own making, and someone
who watches the wire. Nothing here touches the server."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection

from tests.faults import _protocols

RTP_HEADER = struct.Struct("!BBHII")


def is_rtp(data: bytes) -> bool:
    return len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224


def dtls_of(pc: RTCPeerConnection) -> Any:
    return pc.getTransceivers()[0].sender.transport


class OwnPackets:
    """Rewrite every RTP packet a client's connection sends, before SRTP:
    ``rewrite`` gets the plain packet and returns what to send instead (any
    number of packets). RTCP goes out untouched."""

    def __init__(
        self, pc: RTCPeerConnection, rewrite: Callable[[bytes], list[bytes]]
    ) -> None:
        dtls = dtls_of(pc)
        original = dtls._send_rtp
        self.sent = 0

        async def send(data: bytes) -> None:
            for packet in rewrite(data) if is_rtp(data) else [data]:
                await original(packet)
                self.sent += 1

        dtls._send_rtp = send


def with_header(
    data: bytes, seq: int | None = None, ssrc: int | None = None, payload: bytes = b""
) -> bytes:
    """``data`` (a plain RTP packet without extensions' changes) with another
    sequence number, SSRC and/or payload appended to its own."""
    first, second, old_seq, ts, old_ssrc = RTP_HEADER.unpack_from(data)
    header = RTP_HEADER.pack(
        first,
        second,
        old_seq if seq is None else seq & 0xFFFF,
        ts,
        old_ssrc if ssrc is None else ssrc,
    )
    return header + data[12:] + payload


async def send_rtcp(pc: RTCPeerConnection, compound: bytes) -> None:
    """Send RTCP of the client's own making on ``pc`` (SRTCP-protected)."""
    await dtls_of(pc)._send_rtp(compound)


def nack_packet(
    sender_ssrc: int, media_ssrc: int, items: list[tuple[int, int]]
) -> bytes:
    """A generic NACK (RFC 4585 6.2.1) with (PID, BLP) items."""
    fci = b"".join(struct.pack("!HH", pid & 0xFFFF, blp) for pid, blp in items)
    words = (12 + len(fci)) // 4 - 1
    return struct.pack("!BBHII", 0x81, 205, words, sender_ssrc, media_ssrc) + fci


@dataclass
class Wire:
    """What arrives on a client's connection, as someone on the path sees it:
    each SRTP datagram's SSRC and sequence number (in clear in the header)
    and a digest of the whole ciphertext."""

    datagrams: list[tuple[int, int, bytes]] = field(default_factory=list)

    def watch(self, pc: RTCPeerConnection) -> None:
        for protocol in _protocols(pc):
            original = protocol.datagram_received

            def received(data: bytes, addr: Any, _original: Any = original) -> None:
                if is_rtp(data):
                    _, _, seq, _, ssrc = RTP_HEADER.unpack_from(data)
                    digest = hashlib.sha1(data).digest()
                    self.datagrams.append((ssrc, seq, digest))
                _original(data, addr)

            protocol.datagram_received = received

    def of(self, ssrc: int) -> int:
        return sum(1 for s, _, _ in self.datagrams if s == ssrc)

    def reused_indexes(self) -> dict[tuple[int, int], int]:
        """(SSRC, SRTP index) that carried more than one ciphertext, and how
        many; the index is the sequence number extended as libsrtp does (the
        nearest to the highest so far). A retransmission of the same packet is
        the same ciphertext and counts once."""
        top: dict[int, int] = {}
        seen: dict[tuple[int, int], set[bytes]] = {}
        for ssrc, seq, digest in self.datagrams:
            high = top.get(ssrc)
            index = (
                seq
                if high is None
                else high + ((seq - high + 0x8000) & 0xFFFF) - 0x8000
            )
            top[ssrc] = index if high is None else max(high, index)
            seen.setdefault((ssrc, index), set()).add(digest)
        return {key: len(d) for key, d in seen.items() if len(d) > 1}
