"""Fault injection in a client process: the server is never touched.

These reach into the *client's* aioice sockets (test code only) to drop, delay or
cut what the client sends, the way a bad network would.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiortc import RTCPeerConnection


def _protocols(pc: RTCPeerConnection) -> list[Any]:
    transceivers = pc.getTransceivers()
    if not transceivers:
        return []
    return list(transceivers[0].receiver.transport.transport._connection._protocols)


class OutgoingFault:
    """Wraps a client pc's UDP sends: drop a fraction, delay with jitter, or cut."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        drop: float = 0.0,
        jitter: float = 0.0,
        seed: int = 1,
        burst: int = 1,
        delay: float = 0.0,
    ) -> None:
        """``drop`` a share of the media in runs of ``burst`` packets, delay
        media by 0..``jitter`` s at random (reordering it), every packet (STUN
        too: the path's RTT) by ``delay`` s, or ``cut`` everything."""
        self.drop = drop
        self.jitter = jitter
        self.burst = burst
        self.delay = delay
        self.cut = False
        self.sent = 0
        self.dropped = 0
        self._run = 0  # packets still to drop in the current burst
        self._random = random.Random(seed)
        self._originals: list[tuple[Any, Any]] = []
        for protocol in _protocols(pc):
            transport = protocol.transport
            original = transport.sendto
            self._originals.append((transport, original))
            transport.sendto = self._wrap(original)

    def _wrap(self, original: Any) -> Any:
        def sendto(data: bytes, addr: Any = None) -> None:
            media = len(data) > 0 and 127 < data[0] < 192  # RTP/RTCP, not STUN/DTLS
            if (
                media
                and not self._run
                and self._random.random() < self.drop / self.burst
            ):
                self._run = self.burst
            if self.cut or (media and self._run):
                self._run = max(0, self._run - 1)
                self.dropped += 1
                return
            self.sent += 1
            delay = self.delay
            if self.jitter and media:
                delay += self._random.uniform(0, self.jitter)
            if delay:
                asyncio.get_running_loop().call_later(delay, original, data, addr)
            else:
                original(data, addr)

        return sendto

    def restore(self) -> None:
        for transport, original in self._originals:
            transport.sendto = original


def _is_rtp(data: bytes) -> bool:
    """RTP, not RTCP (RFC 5761: RTCP packet types 192-223), STUN or DTLS."""
    return len(data) > 1 and 127 < data[0] < 192 and not 192 <= data[1] <= 223


class IncomingFault:
    """Wraps a client pc's UDP receive path: drop a fraction of the RTP it is sent
    (what the server forwards to it), as a lossy download would."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        drop: float = 0.0,
        seed: int = 2,
        jitter: float = 0.0,
    ) -> None:
        """``drop`` a share of the RTP, or delay it by 0..``jitter`` s at
        random (reordering it), as a congested download would."""
        self.drop = drop
        self.jitter = jitter
        self.received = 0
        self.dropped = 0
        self._random = random.Random(seed)
        self._originals: list[tuple[Any, Any]] = []
        for protocol in _protocols(pc):
            original = protocol.datagram_received
            self._originals.append((protocol, original))
            protocol.datagram_received = self._wrap(original)

    def _wrap(self, original: Any) -> Any:
        def datagram_received(data: bytes, addr: Any) -> None:
            if _is_rtp(data) and self._random.random() < self.drop:
                self.dropped += 1
                return
            self.received += 1
            if self.jitter and _is_rtp(data):
                delay = self._random.uniform(0, self.jitter)
                asyncio.get_running_loop().call_later(delay, original, data, addr)
            else:
                original(data, addr)

        return datagram_received

    def restore(self) -> None:
        for protocol, original in self._originals:
            protocol.datagram_received = original
