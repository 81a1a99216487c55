"""The UDP port range media sockets bind in (``--rtc-ports``).

The server owns one ``PortPool``; each participant takes a ``PortLease`` at
join for as many ports as its peer connections will bind, so a full range
refuses the newcomer before anything is negotiated and never a participant
already in a call. A released port goes to the back of the queue: it is
reused last, so stray packets of its previous peer rarely reach a new one.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass


class PortsExhausted(Exception):
    """No port of the range is left for this lease."""


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high <= 65535:
            raise ValueError(
                f"{self}: needs LO-HI with 1 <= LO <= HI <= 65535 (e.g. 40000-49999)"
            )

    @classmethod
    def parse(cls, text: str) -> PortRange:
        low, sep, high = text.strip().partition("-")
        if not (sep and low.strip().isdigit() and high.strip().isdigit()):
            raise ValueError(f"{text!r} is not LO-HI (e.g. 40000-49999)")
        return cls(int(low), int(high))

    def __len__(self) -> int:
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


class PortPool:
    """The ports of ``ports``: free ones in a queue, the rest promised to leases."""

    def __init__(self, ports: PortRange) -> None:
        self.range = ports
        self._free = collections.deque(range(ports.low, ports.high + 1))
        #: ports promised to leases, bound or not
        self.reserved = 0

    @property
    def size(self) -> int:
        return len(self.range)

    @property
    def bound(self) -> int:
        """Ports with a socket (or taken to bind one)."""
        return self.size - len(self._free)

    def lease(self, count: int) -> PortLease:
        if self.reserved + count > self.size:
            raise PortsExhausted(
                f"the media port range {self.range} is in use "
                f"({self.reserved} of {self.size} ports)"
            )
        self.reserved += count
        return PortLease(self, count)

    def stats(self) -> dict[str, object]:
        return {
            "range": str(self.range),
            "size": self.size,
            "reserved": self.reserved,
            "bound": self.bound,
        }

    def _take(self) -> int:
        return self._free.popleft()

    def _give(self, port: int) -> None:
        self._free.append(port)


Transport = asyncio.DatagramTransport
Protocol = asyncio.DatagramProtocol


class PortLease:
    """``count`` ports of a pool for one participant, bound as its peer
    connections gather; a port comes back when its socket has closed (a peer
    connection made again) or when the lease is closed."""

    def __init__(self, pool: PortPool, count: int) -> None:
        self.pool = pool
        self.count = count
        self._sockets: dict[int, Transport] = {}
        self.closed = False

    async def bind(
        self, factory: Callable[[], Protocol], address: str
    ) -> tuple[Transport, Protocol]:
        """A UDP endpoint on ``address`` at a port of the range; ports that
        another program holds are skipped (and put back in the queue)."""
        if self.closed:
            raise PortsExhausted("the participant has left")
        self._reclaim()
        if len(self._sockets) >= self.count:
            raise PortsExhausted(f"all {self.count} ports of this participant bound")
        loop = asyncio.get_running_loop()
        for _ in range(len(self.pool._free)):
            port = self.pool._take()
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    factory, local_addr=(address, port)
                )
            except OSError:
                self.pool._give(port)
                continue
            if self.closed:  # left while binding
                transport.close()
                self.pool._give(port)
                raise PortsExhausted("the participant has left")
            self._sockets[port] = transport
            return transport, protocol
        raise PortsExhausted(f"no port of {self.pool.range} could be bound")

    def _reclaim(self) -> None:
        for port, transport in list(self._sockets.items()):
            if transport.is_closing():
                del self._sockets[port]
                self.pool._give(port)

    def close(self) -> None:
        """Give every port back (the sockets are their peer connections' to
        close: a port whose socket outlives this is skipped when bound again)."""
        if self.closed:
            return
        self.closed = True
        for port in self._sockets:
            self.pool._give(port)
        self._sockets.clear()
        self.pool.reserved -= self.count
