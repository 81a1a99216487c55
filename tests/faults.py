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
    ) -> None:
        self.drop = drop
        self.jitter = jitter
        self.cut = False
        self.sent = 0
        self.dropped = 0
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
            if self.cut or (media and self._random.random() < self.drop):
                self.dropped += 1
                return
            self.sent += 1
            if self.jitter and media:
                delay = self._random.uniform(0, self.jitter)
                asyncio.get_running_loop().call_later(delay, original, data, addr)
            else:
                original(data, addr)

        return sendto

    def restore(self) -> None:
        for transport, original in self._originals:
            transport.sendto = original
