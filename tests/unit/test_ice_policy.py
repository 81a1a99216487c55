"""Where ICE gathers and the candidates clients trickle:
``miscord_client.ice`` (``IcePolicy`` address filtering and candidates,
``install``/``installed``, ``connections`` and ``prepare`` on a peer connection
that has not gathered, so no socket is opened) and ``sfu.rtc.ice
.parse_candidate``."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator

import aioice
import aiortc.rtcicetransport
import pytest
from aiortc import RTCPeerConnection

from miscord_client import ice
from miscord_client.ice import LOOPBACK, IcePolicy
from sfu.rtc.ice import ServerIcePolicy, parse_candidate

HOSTS = ("127.0.0.1", "::1", "10.0.0.1", "fe80::1")


@pytest.fixture
def aiortc_connection() -> Iterator[None]:
    """Whatever a test installs, aiortc's ICE connection class is put back."""
    original = aiortc.rtcicetransport.Connection
    try:
        yield
    finally:
        aiortc.rtcicetransport.Connection = original


# --- IcePolicy --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ipv4", "ipv6", "expected"),
    [
        (True, True, list(HOSTS)),
        (True, False, ["127.0.0.1", "10.0.0.1"]),
        (False, True, ["::1", "fe80::1"]),
        (False, False, []),
    ],
)
def test_host_addresses_filter_by_family(ipv4, ipv6, expected):
    assert IcePolicy(hosts=HOSTS).host_addresses(ipv4, ipv6) == expected


def test_host_addresses_without_hosts():
    assert IcePolicy().host_addresses(True, True) == []


def test_host_addresses_refuse_a_name():
    with pytest.raises(ValueError):
        IcePolicy(hosts=("localhost",)).host_addresses(True, True)


def test_server_policy_is_an_ice_policy():
    policy = ServerIcePolicy(hosts=("127.0.0.1",), consent_interval=2.0)
    assert isinstance(policy, IcePolicy)
    assert policy.host_addresses(True, True) == ["127.0.0.1"]


def fake_connection(gathers: bool = True) -> types.SimpleNamespace:
    return types.SimpleNamespace(gathers_hosts=gathers, _use_ipv4=True, _use_ipv6=False)


async def gather_with(policy: IcePolicy, connection: object) -> list[object]:
    calls: list[object] = []

    async def default(component: int, addresses: list[str], timeout: int) -> list:
        calls.append((component, addresses, timeout))
        return []

    await policy.candidates(connection, 1, ["192.168.1.5"], 5, default)  # type: ignore[arg-type]
    return calls


async def test_policy_candidates_gather_on_its_hosts():
    calls = await gather_with(IcePolicy(hosts=HOSTS), fake_connection())
    assert calls == [(1, ["127.0.0.1", "10.0.0.1"], 5)]


async def test_policy_without_hosts_gathers_where_aioice_would():
    assert await gather_with(IcePolicy(), fake_connection()) == [
        (1, ["192.168.1.5"], 5)
    ]


async def test_relay_only_connection_keeps_aioice_addresses():
    calls = await gather_with(IcePolicy(hosts=HOSTS), fake_connection(gathers=False))
    assert calls == [(1, ["192.168.1.5"], 5)]


def test_connection_gathers_hosts_unless_relay_only():
    assert ice.Connection(ice_controlling=True).gathers_hosts
    relay = ice.Connection(
        ice_controlling=True, transport_policy=aioice.TransportPolicy.RELAY
    )
    assert not relay.gathers_hosts


async def test_closing_connection_skips_consent_checks():
    connection = ice.Connection(ice_controlling=True)
    connection._closing = True
    connection.policy = ServerIcePolicy(consent_interval=3600)
    # without the guard this would sleep for an hour: fail fast instead
    assert await asyncio.wait_for(connection.query_consent(), 2) is None


# --- install / connections / prepare ----------------------------------------------


def test_install_makes_aiortc_build_our_connection(aiortc_connection):
    aiortc.rtcicetransport.Connection = aioice.Connection
    assert not ice.installed()
    ice.install()
    assert ice.installed()
    assert aiortc.rtcicetransport.Connection is ice.Connection


def test_install_is_idempotent(aiortc_connection):
    ice.install()
    ice.install()
    assert aiortc.rtcicetransport.Connection is ice.Connection


async def test_connections_refuse_a_pc_made_before_install(aiortc_connection):
    aiortc.rtcicetransport.Connection = aioice.Connection
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        ice.install()  # too late for this pc
        with pytest.raises(RuntimeError, match=r"install\(\) must run before"):
            ice.connections(pc)
    finally:
        await pc.close()


async def test_connections_of_a_pc_without_transceivers(aiortc_connection):
    ice.install()
    pc = RTCPeerConnection()
    try:
        assert ice.connections(pc) == []
    finally:
        await pc.close()


async def test_prepare_sets_the_policy_on_every_connection(aiortc_connection):
    ice.install()
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        connections = ice.connections(pc)
        assert len(connections) == 2  # not bundled before negotiation
        assert all(c.policy is None for c in connections)
        ice.prepare(pc, LOOPBACK)
        assert all(c.policy is LOOPBACK for c in ice.connections(pc))
    finally:
        await pc.close()


async def test_prepare_without_policy_changes_nothing(aiortc_connection):
    ice.install()
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        ice.prepare(pc, LOOPBACK)
        ice.prepare(pc, None)
        (connection,) = ice.connections(pc)
        assert connection.policy is LOOPBACK
    finally:
        await pc.close()


async def test_prepare_without_policy_accepts_a_pc_made_before_install(
    aiortc_connection,
):
    aiortc.rtcicetransport.Connection = aioice.Connection
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio")
        ice.prepare(pc, None)  # nothing to set: no refusal
        with pytest.raises(RuntimeError):
            ice.prepare(pc, LOOPBACK)
    finally:
        await pc.close()


# --- parse_candidate --------------------------------------------------------------

HOST = "1 1 udp 2122260223 192.168.1.2 54321 typ host generation 0"
SRFLX = (
    "842163049 1 udp 1677729535 203.0.113.5 46154 typ srflx raddr 10.0.0.1 rport 46154"
)
RELAY = "3 1 udp 41885695 198.51.100.7 3478 typ relay raddr 203.0.113.5 rport 46154"


@pytest.mark.parametrize("prefix", ["candidate:", ""], ids=["prefixed", "bare"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HOST, ("1", "192.168.1.2", 54321, "udp", "host", None)),
        (SRFLX, ("842163049", "203.0.113.5", 46154, "udp", "srflx", "10.0.0.1")),
        (RELAY, ("3", "198.51.100.7", 3478, "udp", "relay", "203.0.113.5")),
    ],
    ids=["host", "srflx", "relay"],
)
def test_parse_candidate_valid(prefix, text, expected):
    parsed = parse_candidate(
        {"candidate": prefix + text, "sdpMid": "0", "sdpMLineIndex": 0}
    )
    assert parsed is not None
    assert (
        parsed.foundation,
        parsed.ip,
        parsed.port,
        parsed.protocol,
        parsed.type,
        parsed.relatedAddress,
    ) == expected
    assert (parsed.sdpMid, parsed.sdpMLineIndex) == ("0", 0)


def test_parse_candidate_tcp():
    parsed = parse_candidate(
        {
            "candidate": "candidate:4 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active"
        }
    )
    assert (parsed.protocol, parsed.tcpType) == ("tcp", "active")


def test_parse_candidate_without_mid_or_index_is_on_the_first_m_line():
    parsed = parse_candidate({"candidate": HOST})
    assert (parsed.sdpMid, parsed.sdpMLineIndex) == (None, 0)


def test_parse_candidate_keeps_mid_without_index():
    parsed = parse_candidate({"candidate": HOST, "sdpMid": "1"})
    assert (parsed.sdpMid, parsed.sdpMLineIndex) == ("1", None)


def test_parse_candidate_mdns_is_refused_quietly():
    text = "candidate:5 1 udp 2122260223 1f0e6c3a-4b2d-4c1e-9a3b-7d2e1f0a9b8c.local 54321 typ host"
    assert parse_candidate({"candidate": text, "sdpMid": "0"}) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "candidate:1 1 udp",
        "candidate:1 1 udp 2122260223 192.168.1.2 abc typ host",
        "candidate:1 x udp 2122260223 192.168.1.2 5000 typ host",
    ],
    ids=["empty", "word", "short", "port-not-number", "component-not-number"],
)
def test_parse_candidate_garbage(text):
    with pytest.raises(ValueError, match="not an ICE candidate"):
        parse_candidate({"candidate": text})


@pytest.mark.parametrize("port", ["0", "65536", "70000", "-1"])
def test_parse_candidate_bad_port(port):
    text = f"candidate:1 1 udp 2122260223 192.168.1.2 {port} typ host"
    with pytest.raises(ValueError, match="invalid port"):
        parse_candidate({"candidate": text})


@pytest.mark.parametrize("protocol", ["sctp", "dccp", "quic"])
def test_parse_candidate_unknown_protocol(protocol):
    text = f"candidate:1 1 {protocol} 2122260223 192.168.1.2 5000 typ host"
    with pytest.raises(ValueError, match="unknown protocol"):
        parse_candidate({"candidate": text})


def test_parse_candidate_protocol_case_is_ignored():
    text = "candidate:1 1 UDP 2122260223 192.168.1.2 5000 typ host"
    assert parse_candidate({"candidate": text}).port == 5000


def test_parse_candidate_too_few_fields_says_so():
    with pytest.raises(ValueError, match="too few fields"):
        parse_candidate({"candidate": "candidate:1 1 udp"})


# --- which nominated pair is used ---------------------------------------------------


def candidate(kind: str, host: str, port: int) -> aioice.Candidate:
    return aioice.Candidate(
        foundation=kind,
        component=1,
        transport="udp",
        priority=aioice.ice.candidate_priority(1, kind),
        host=host,
        port=port,
        type=kind,
    )


class Recorder(IcePolicy):
    """An IcePolicy that records the moves it is told of."""

    def moved(self, connection, old, new):
        self.moves.append((old, new))


def nominated_success(connection, local, remote) -> aioice.ice.CandidatePair:
    protocol = types.SimpleNamespace(local_candidate=local, transport=None)
    pair = aioice.ice.CandidatePair(protocol, remote)
    pair.state = aioice.ice.CandidatePair.State.SUCCEEDED
    pair.nominated = True
    connection._check_list.append(pair)
    connection.check_complete(pair)
    return pair


@pytest.mark.parametrize("controlling", [True, False])
async def test_a_worse_pair_nominated_later_does_not_take_over(controlling):
    """Aggressive nomination: the relayed check answers after the direct one;
    the direct pair (higher priority on both ends) stays in use."""
    connection = ice.Connection(ice_controlling=controlling)
    connection.policy = Recorder()
    object.__setattr__(connection.policy, "moves", [])
    local = candidate("host", "127.0.0.1", 5000)
    direct = nominated_success(connection, local, candidate("host", "10.0.0.2", 6000))
    nominated_success(connection, local, candidate("relay", "10.0.0.9", 7000))
    assert connection._nominated[1] is direct
    assert connection.policy.moves == []


async def test_a_better_pair_nominated_later_takes_over_and_is_reported():
    connection = ice.Connection(ice_controlling=True)
    connection.policy = Recorder()
    object.__setattr__(connection.policy, "moves", [])
    local = candidate("host", "127.0.0.1", 5000)
    relayed = nominated_success(connection, local, candidate("relay", "10.0.0.9", 7000))
    direct = nominated_success(connection, local, candidate("host", "10.0.0.2", 6000))
    assert connection._nominated[1] is direct
    assert connection.policy.moves == [(relayed, direct)]


def test_the_server_points_its_connected_socket_at_the_better_pair():
    """The fast path sends on a connected socket: a move reconnects it (and
    an unconnected one is left for the fast path to connect)."""
    import socket

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as idle,
    ):
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", 7000))
        local = candidate("host", "127.0.0.1", sock.getsockname()[1])

        def pair(sock, remote):
            protocol = types.SimpleNamespace(
                local_candidate=local, transport=types.SimpleNamespace(_sock=sock)
            )
            return aioice.ice.CandidatePair(protocol, remote)

        old = pair(sock, candidate("relay", "127.0.0.1", 7000))
        new = pair(sock, candidate("host", "127.0.0.1", 6000))
        ServerIcePolicy().moved(ice.Connection(ice_controlling=True), old, new)
        assert sock.getpeername() == ("127.0.0.1", 6000)
        ServerIcePolicy().moved(
            ice.Connection(ice_controlling=True), old, pair(idle, new.remote_candidate)
        )
        with pytest.raises(OSError):
            idle.getpeername()
