"""Where a peer connection's ICE gathers, set per connection.

aioice gathers host candidates on every address of the machine but loopback,
and has no setting for it: a loopback-only machine (every test here) gathers
nothing, and a server cannot choose its addresses, ports or the address it
announces. ``Connection`` is aioice's, steered by an ``IcePolicy`` that
``prepare`` sets on a peer connection before it gathers; without a policy it
is aioice's exactly.

Nothing changes on import. ``install()`` makes aiortc build ``Connection``
instead of aioice's: one attribute of ``aiortc.rtcicetransport``, set by whoever
wants policies (the server at start, a client given addresses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aioice
import aioice.ice
import aiortc.rtcicetransport
from aiortc import RTCPeerConnection

#: aioice's own way to gather a component's candidates on some addresses
Gather = Callable[[int, list[str], int], Awaitable[list[aioice.Candidate]]]


@dataclass(frozen=True)
class IcePolicy:
    """Where a peer connection gathers: host candidates on ``hosts`` (empty:
    wherever aioice would), as aioice gathers them. A server's policy adds
    port ranges, an announced address and its consent checks by overriding
    ``candidates`` and ``keep_consent``."""

    hosts: tuple[str, ...] = ()

    def host_addresses(self, use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            host
            for host in self.hosts
            if (use_ipv6 if ipaddress.ip_address(host).version == 6 else use_ipv4)
        ]

    async def candidates(
        self,
        connection: Connection,
        component: int,
        addresses: list[str],
        timeout: int,
        default: Gather,
    ) -> list[aioice.Candidate]:
        """A component's candidates; ``addresses`` is aioice's choice (empty
        under the relay policy, which gathers no host candidates)."""
        if self.hosts and connection.gathers_hosts:
            addresses = self.host_addresses(connection._use_ipv4, connection._use_ipv6)
        return await default(component, addresses, timeout)

    async def keep_consent(self, connection: Connection) -> None:
        """RFC 7675 consent checks for as long as the connection lives."""
        await aioice.Connection.query_consent(connection)

    def moved(
        self,
        connection: Connection,
        old: aioice.ice.CandidatePair,
        new: aioice.ice.CandidatePair,
    ) -> None:
        """The pair in use became ``new`` (a better one, nominated later)."""


#: host candidates on 127.0.0.1 only: tests, and a server and its clients on
#: one machine
LOOPBACK = IcePolicy(hosts=("127.0.0.1",))


class Connection(aioice.Connection):
    """aioice's ICE connection, gathering as its ``policy`` says."""

    policy: IcePolicy | None = None

    @property
    def gathers_hosts(self) -> bool:
        """Host candidates are wanted (not the relay-only policy)."""
        return bool(self._transport_policy == aioice.TransportPolicy.ALL)

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        default = super().get_component_candidates
        if self.policy is None:
            return await default(component, addresses, timeout)
        return await self.policy.candidates(
            self, component, addresses, timeout, default
        )

    def check_complete(self, pair: aioice.ice.CandidatePair) -> None:
        """aioice's, but the pair in use is the highest-priority nominated one.

        A controlling aioice nominates aggressively (every check carries
        USE-CANDIDATE) and each nominated success replaced the pair in use, so
        a relayed check answering after a direct one moved the media to TURN.
        RFC 5245 (8.1.1.2) has both ends use the highest-priority nominated
        pair, as browsers do: the two ends then agree, whatever order the
        answers come in."""
        before = self._nominated.get(pair.component)
        super().check_complete(pair)
        after = self._nominated.get(pair.component)
        if before is None or after is None or after is before:
            return
        if self._priority(before) >= self._priority(after):
            self._nominated[pair.component] = before
        elif self.policy is not None:
            self.policy.moved(self, before, after)

    def _priority(self, pair: aioice.ice.CandidatePair) -> int:
        return aioice.ice.candidate_pair_priority(
            pair.local_candidate, pair.remote_candidate, self.ice_controlling
        )

    async def query_consent(self) -> None:
        # aioice 0.13 starts this at the end of connect() even when close()
        # ran meanwhile; it would then sleep forever
        if self._closing:
            return
        if self.policy is None:
            await super().query_consent()
        else:
            await self.policy.keep_consent(self)


def install() -> None:
    """Make aiortc build ``Connection`` (idempotent)."""
    aiortc.rtcicetransport.Connection = Connection  # type: ignore[misc]


def installed() -> bool:
    return aiortc.rtcicetransport.Connection is Connection


def connections(pc: RTCPeerConnection) -> list[Connection]:
    """The ICE connections of ``pc`` (one per transport; bundled: one)."""
    found: dict[int, Connection] = {}
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        if not isinstance(connection, Connection):
            raise RuntimeError(
                "miscord_client.ice.install() must run before this peer connection "
                "is made"
            )
        found[id(connection)] = connection
    return list(found.values())


def prepare(pc: RTCPeerConnection, policy: IcePolicy | None) -> None:
    """Gather for ``pc`` as ``policy`` says: call it before each
    setLocalDescription (its transports exist once transceivers do)."""
    if policy is None:
        return
    for connection in connections(pc):
        connection.policy = policy
