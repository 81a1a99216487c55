"""ICE on the server: where it gathers and how it keeps consent (the server's
``IcePolicy``), the candidates clients trickle, and the pair in use.

The server's peer connections gather host candidates on ``MediaSettings
.ice_hosts`` (aioice leaves 127.0.0.1 out of its own choice), at ports of the
participant's lease when a range is set, and write the announced address into
them when one is set (a server behind 1:1 NAT, or bound to 0.0.0.0). They
check consent (RFC 7675) often enough to notice a vanished peer within seconds,
but only when its packets do not already show it alive.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import aioice
import aioice.ice
import aioice.stun
import aioice.turn
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from miscord_client.ice import Connection, Gather, IcePolicy

from .ports import PortLease

log = logging.getLogger("miscord.voice")

#: RFC 7675: a STUN check refreshes consent at least this often, whatever else
#: the peer sends (its recommended interval; consent expires after 30 s)
CONSENT_FRESHNESS = 5.0
#: checks that go unanswered in a row before consent expires (aioice's)
CONSENT_FAILURES = 6
#: the attribute of an ICE connection that holds its ``inbound.ActivityProbe``
PROBE_ATTRIBUTE = "_miscord_probe"
#: the attribute of an ICE connection that holds its last consent check's
#: round trip (seconds): the RTT of this connection's own path
RTT_ATTRIBUTE = "_miscord_rtt"


@dataclass(frozen=True)
class ServerIcePolicy(IcePolicy):
    """``hosts`` as ``IcePolicy`` (``0.0.0.0`` binds to every address);
    candidates carry ``announced`` instead of the bound address when set, and
    their sockets take ports of ``ports`` when set (a participant's lease);
    consent checked every ``consent_interval`` seconds while the peer is quiet,
    every ``CONSENT_FRESHNESS`` while its packets show it alive."""

    consent_interval: float = 1.0
    announced: str | None = None
    ports: PortLease | None = None

    async def candidates(
        self,
        connection: Connection,
        component: int,
        addresses: list[str],
        timeout: int,
        default: Gather,
    ) -> list[aioice.Candidate]:
        """Host candidates as aioice makes them, but bound where the settings
        say and naming the announced address. (The server gathers no STUN or
        TURN candidates: it is the address clients reach.)"""
        if self.announced is None and self.ports is None:
            return await super().candidates(
                connection, component, addresses, timeout, default
            )
        if self.hosts:
            addresses = self.host_addresses(connection._use_ipv4, connection._use_ipv6)
        found = []
        for address in addresses:
            protocol = await self._bind(connection, address)
            if protocol is None:
                continue
            host = self.announced or address
            port = protocol.transport.get_extra_info("sockname")[1]
            protocol.local_candidate = aioice.Candidate(
                foundation=aioice.ice.candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=aioice.ice.candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            connection._protocols.append(protocol)
            found.append(protocol.local_candidate)
        return found

    def moved(
        self,
        connection: Connection,
        old: aioice.ice.CandidatePair,
        new: aioice.ice.CandidatePair,
    ) -> None:
        """The fast path sends on a connected socket (``outbound``): point it
        at the new pair's peer, or the kernel would drop that peer's packets."""
        log.info("ICE moved to a better pair: %s -> %s", old, new)
        sock = getattr(new.protocol.transport, "_sock", None)
        if sock is None:
            return
        try:
            peer = sock.getpeername()
        except OSError:
            return  # not connected (yet): the fast path connects it itself
        if peer[:2] != new.remote_addr[:2]:
            sock.connect(new.remote_addr)

    async def _bind(
        self, connection: Connection, address: str
    ) -> aioice.ice.StunProtocol | None:
        def factory() -> aioice.ice.StunProtocol:
            return aioice.ice.StunProtocol(connection)

        try:
            if self.ports is not None:
                transport, protocol = await self.ports.bind(factory, address)
            else:
                (
                    transport,
                    protocol,
                ) = await asyncio.get_running_loop().create_datagram_endpoint(
                    factory, local_addr=(address, 0)
                )
        except OSError as exc:
            log.warning("cannot bind a media socket on %s: %s", address, exc)
            return None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE
            )
        assert isinstance(protocol, aioice.ice.StunProtocol)
        return protocol

    async def keep_consent(self, connection: Connection) -> None:
        """aioice's consent loop with a check skipped while the peer was heard
        from within half the interval (its ActivityProbe; the answer to the
        last check is older than that), except every ``CONSENT_FRESHNESS``
        seconds: the short interval is there to notice a silent peer within
        seconds, and a talking one needs no check per second (32 a second at
        16 participants, a few % of the server's CPU)."""
        failures = 0
        checked = time.monotonic()
        interval = self.consent_interval
        while True:
            await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
            now = time.monotonic()
            probe = getattr(connection, PROBE_ATTRIBUTE, None)
            if (
                probe is not None
                and now - probe.last_rx < interval / 2
                and now - checked < CONSENT_FRESHNESS
            ):
                continue
            checked = now
            for pair in connection._nominated.values():
                request = connection.build_request(pair, nominate=False)
                sent = time.monotonic()
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=(connection.remote_password or "").encode(),
                        retransmissions=0,
                    )
                    setattr(connection, RTT_ATTRIBUTE, time.monotonic() - sent)
                    failures = 0
                except aioice.stun.TransactionError:
                    failures += 1
                if failures >= CONSENT_FAILURES:
                    log.info("consent to send expired")
                    connection._query_consent_task = None
                    return await connection.close()


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
        raise ValueError(
            f"not an ICE candidate: {str(exc) or 'too few fields'}"
        ) from None
    if parsed.protocol.lower() not in ("udp", "tcp") or not 0 < parsed.port < 65536:
        raise ValueError("candidate has an unknown protocol or an invalid port")
    if parsed.ip.endswith(".local"):
        return None
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    return parsed


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
    out: dict[str, Any] = {
        "state": "succeeded",
        "nominated": True,
        "localCandidate": f"{local.host}:{local.port} {local.type}",
        "remoteCandidate": f"{remote.host}:{remote.port} {remote.type}",
    }
    rtt = getattr(ice._connection, RTT_ATTRIBUTE, None)
    if rtt is not None:  # measured by the consent checks (keep_consent)
        out["currentRoundTripTime"] = round(rtt, 6)
    return out
