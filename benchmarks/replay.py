"""Load clients that are not the bound: real sessions, replayed packets.

Each participant joins with the SDK (signaling, ICE, DTLS, SRTP keys: all
real) and publishes a track that never yields a frame, so aiortc sends no
RTP. Its packets are then built and SRTP-protected ahead of time with the
publish connection's own keys and sent from one paced loop straight to the
nominated ICE pair's socket: a few µs per packet. What the subscribe
connections receive is counted by the kernel, not here: the benchmark's
nftables rule (``benchmarks/worker_scaling.py``) counts and drops RTP to
their ports, and lets STUN and DTLS through, so consent checks and RTCP
keep the sessions alive at no cost per packet in the client.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.rtp import RtpPacket

from miscord_client import ice

PERIOD = 0.02  # seconds between a publisher's packets (Opus, 20 ms)
PAYLOAD = 100  # bytes of "Opus" per packet


class Silent(MediaStreamTrack):
    """An audio track that never yields a frame."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


def _pair(pc: RTCPeerConnection) -> Any:
    """The nominated ICE pair of a bundled peer connection."""
    (connection,) = ice.connections(pc)
    return connection._nominated[1]


def protected_packets(pc: RTCPeerConnection, seconds: float) -> list[bytes]:
    """``seconds`` of 20 ms packets of the connection's one audio sender,
    protected in order with its SRTP session."""
    (transceiver,) = pc.getTransceivers()
    sender = transceiver.sender
    srtp = sender.transport._tx_srtp
    payload_type = transceiver._codecs[0].payloadType
    seq, stamp = int.from_bytes(os.urandom(2), "big"), 0
    packets = []
    for _ in range(int(seconds / PERIOD)):
        packet = RtpPacket(
            payload_type=payload_type,
            sequence_number=seq,
            timestamp=stamp,
            ssrc=sender._ssrc,
            payload=os.urandom(PAYLOAD),
        )
        packets.append(srtp.protect(packet.serialize()))
        seq, stamp = (seq + 1) & 0xFFFF, (stamp + 960) & 0xFFFFFFFF
    return packets


def local_port(pc: RTCPeerConnection) -> int:
    """The UDP port the connection's media arrives on."""
    return int(_pair(pc).protocol.transport.get_extra_info("sockname")[1])


@dataclass
class Publisher:
    packets: list[bytes]
    send: Callable[[bytes], None]
    sent: int = 0


def publisher(pc: RTCPeerConnection, seconds: float) -> Publisher:
    pair = _pair(pc)
    transport, remote = pair.protocol.transport, pair.remote_addr
    return Publisher(
        protected_packets(pc, seconds), lambda data: transport.sendto(data, remote)
    )


async def send_forever(publishers: list[Publisher]) -> None:
    """Every publisher's next packet every 20 ms, on a wall-clock schedule
    (a late loop catches up rather than drifting)."""
    start, tick = time.monotonic(), 0
    while True:
        for pub in publishers:
            if pub.sent < len(pub.packets):
                pub.send(pub.packets[pub.sent])
                pub.sent += 1
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * PERIOD - time.monotonic()))
