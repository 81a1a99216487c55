"""Reaching the server from real networks (contract 1.1): the announced
address, the media port range and TURN through a real coturn."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import aioice.stun
import aioice.turn
import pytest

from miscord_client import ice
from tests.diag_call import finding, found, has, report, wait_report
from tests.media import ToneTrack
from tests.turn import TURN_SECRET, spare_ports
from tests.voice import Ears, settle, tone_participant

ROOT = Path(__file__).resolve().parents[2]


def sdp_candidates(sdp: str) -> list[tuple[str, int, str]]:
    """(address, port, type) of every a=candidate line."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            found.append((fields[4], int(fields[5]), fields[7]))
    return found


def nominated(pc) -> aioice.CandidatePair:
    (connection,) = ice.connections(pc)
    return connection._nominated[1]


async def relay_participant(clients, server, user: str, freq: float):
    client = clients(server, user, relay=True)
    await client.join("room")
    client.tone = ToneTrack(freq)
    await client.publish(microphone=client.tone)
    return client


async def test_relay_only_client_speaks_and_hears_through_coturn(
    coturn, start_server, clients
):
    # (coturn first: it stops after the clients, which deallocate on close)
    server = await start_server(turn_urls=[coturn.url], turn_secret=TURN_SECRET)
    # bob first: alice's subscribe offer then follows her joined at once, and
    # her subscribe connection must already have the TURN server
    bob = await tone_participant(clients, server, "bob", 660)
    alice = await relay_participant(clients, server, "alice", 440)
    alice_ears, bob_ears = Ears(alice), Ears(bob)
    await alice_ears.hears(bob.peer_id, 660, timeout=10)
    await bob_ears.hears(alice.peer_id, 440, timeout=10)

    # alice's both connections run over her relayed candidate, seen as such
    # by the server too; bob's (who has a relayed candidate too) go direct
    for pc in (alice.publish_pc, alice.subscribe_pc):
        assert nominated(pc).local_candidate.type == "relay"
    # bob gathered a relayed candidate too, but his direct pairs are better:
    # whichever check answers last, both ends use them
    for pc in (bob.publish_pc, bob.subscribe_pc):
        assert nominated(pc).local_candidate.type == "host"
    bob_pairs = server.services.sfu.participants[bob.peer_id].stats()
    assert all(
        p["remoteCandidate"].endswith(" host")
        for p in bob_pairs
        if p["type"] == "candidate-pair"
    ), bob_pairs
    participant = server.services.sfu.participants[alice.peer_id]
    pairs = [s for s in participant.stats() if s["type"] == "candidate-pair"]
    assert {p["pc"] for p in pairs} == {"publish", "subscribe"}
    assert all(p["remoteCandidate"].endswith(" relay") for p in pairs), pairs
    # support reads it in the report (once a stats tick has seen the pairs)
    body = await wait_report(server, alice.peer_id, has("relayed", "both"))
    assert finding(body, "relayed")["evidence"]["connections"] == [
        "publish",
        "subscribe",
    ]
    assert finding(body, "relayed")["severity"] == "info"
    assert ("relayed", "both") not in found(await report(server, bob.peer_id))

    # the credentials of the REST scheme, and coturn allocated under them
    (turn_server,) = alice.ice_servers
    username = turn_server.username
    assert re.fullmatch(r"\d+:alice", username)
    assert abs(int(username.split(":")[0]) - (time.time() + 86400)) < 60
    expected = hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1)
    assert turn_server.credential == base64.b64encode(expected.digest()).decode()
    log = coturn.log_text()
    assert f"user <{username}>" in log and "ALLOCATE processed, success" in log
    await alice_ears.stop()
    await bob_ears.stop()


async def allocate(coturn, username: str, password: str) -> None:
    """A TURN allocation as a client would make it (aioice's TURN client)."""
    transport, _ = await aioice.turn.create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=("127.0.0.1", coturn.port),
        username=username,
        password=password,
        channel_refresh_time=60,
    )
    transport.close()


async def test_coturn_refuses_wrong_and_expired_credentials(
    coturn, start_server, sockets
):
    server = await start_server(turn_urls=[coturn.url], turn_secret=TURN_SECRET)
    ws = await sockets(server)
    joined = await ws.join(server.token("alice"))
    (given,) = joined["ice_servers"]
    assert given["urls"] == [coturn.url]
    await allocate(coturn, given["username"], given["credential"])  # they work

    with pytest.raises(aioice.stun.TransactionFailed) as wrong:
        await allocate(coturn, given["username"], "bm90IHRoZSBwYXNzd29yZA==")
    assert wrong.value.response.attributes["ERROR-CODE"][0] == 401

    expired = f"{int(time.time()) - 10}:alice"
    digest = hmac.new(TURN_SECRET.encode(), expired.encode(), hashlib.sha1).digest()
    with pytest.raises(aioice.stun.TransactionFailed) as late:
        await allocate(coturn, expired, base64.b64encode(digest).decode())
    assert late.value.response.attributes["ERROR-CODE"][0] == 401

    # an events connection has no media: it is handed no credentials
    events = await sockets(server)
    assert (await events.join(server.token("bob"), kind="events"))["ice_servers"] == []


async def test_stun_urls_are_handed_out_without_credentials(start_server, sockets):
    server = await start_server(turn_urls=["stun:127.0.0.1:3478"])
    ws = await sockets(server)
    joined = await ws.join(server.token("alice"))
    assert joined["ice_servers"] == [{"urls": ["stun:127.0.0.1:3478"]}]


async def test_candidates_name_the_announced_address_at_ports_of_the_range(
    start_server, clients
):
    """Sockets bound to 0.0.0.0; every candidate names the announced address
    (here the one clients reach: 127.0.0.1) and a port of the range."""
    low, high = spare_ports(10)
    server = await start_server(
        ice_hosts=["0.0.0.0"], announced_ip="127.0.0.1", rtc_ports=f"{low}-{high}"
    )
    alice = await tone_participant(clients, server, "alice", 440)
    bob = await tone_participant(clients, server, "bob", 660)
    ears = Ears(alice)
    await ears.hears(bob.peer_id, 660)
    for client in (alice, bob):
        for pc in (client.publish_pc, client.subscribe_pc):
            sdp = pc.remoteDescription.sdp  # the server's answer or offer
            found = sdp_candidates(sdp)
            assert found, sdp
            assert all(
                host == "127.0.0.1" and low <= port <= high and kind == "host"
                for host, port, kind in found
            ), found
            assert "c=IN IP4 127.0.0.1" in sdp
            assert low <= nominated(pc).remote_candidate.port <= high
    for participant in server.services.sfu.participants.values():
        for pc in (participant.publish.pc, participant.subscribe.pc):
            (connection,) = ice.connections(pc)
            for protocol in connection._protocols:
                bound = protocol.transport.get_extra_info("sockname")
                assert bound[0] == "0.0.0.0" and low <= bound[1] <= high
    await ears.stop()


async def websocket_stats(server) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            server.url + "/api/debug/websocket-stats",
            headers={"Authorization": f"Bearer {server.token('ops', role='support')}"},
        ) as response,
    ):
        return await response.json()


async def metric(server, name: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        text = await r.text()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_a_used_up_port_range_refuses_only_the_newcomer(
    start_server, clients, sockets
):
    low, high = spare_ports(4)  # two participants: publish + subscribe each
    server = await start_server(rtc_ports=f"{low}-{high}")
    alice = await tone_participant(clients, server, "alice", 440)
    bob = await tone_participant(clients, server, "bob", 660)
    alice_ears, bob_ears = Ears(alice), Ears(bob)
    await alice_ears.hears(bob.peer_id, 660)
    await bob_ears.hears(alice.peer_id, 440)
    stats = (await websocket_stats(server))["rtc_ports"]
    assert stats == {"range": f"{low}-{high}", "size": 4, "reserved": 4, "bound": 4}
    assert 'miscord_rtc_ports{state="bound"} 4.0' in await metric(
        server, "miscord_rtc_ports"
    )

    carol = await sockets(server)
    await carol.send(
        {
            "type": "join",
            "id": 1,
            "token": server.token("carol"),
            "channel": "room",
            "kind": "voice",
        }
    )
    refused = await carol.expect("error")
    assert refused["code"] == "no_ports" and refused["ref"] == 1
    assert f"{low}-{high}" in refused["message"]
    assert await carol.alive()  # a clean error: the socket stays, not joined
    assert carol.seen.count({"type": "joined"}) == 0
    # the two in the call noticed nothing: still hearing each other, nobody left
    await asyncio.sleep(0.5)
    assert alice_ears.share(bob.peer_id, 660) > 0.5
    assert bob_ears.share(alice.peer_id, 440) > 0.5
    assert not [m for m in alice.messages if m.get("type") == "participant_left"]
    assert len(server.services.sfu.participants) == 2

    # bob leaves: his ports come back, and carol's retry gets them
    await bob.leave()
    await settle(lambda: server.services.sfu.ports.reserved == 2)
    joined = await carol.join(server.token("carol"))
    assert joined["peer_id"]
    await alice.wait_for_message("participant_joined")
    await alice_ears.stop()
    await bob_ears.stop()

    await alice.leave()
    await carol.send({"type": "leave"})
    await settle(lambda: server.services.sfu.ports.reserved == 0)
    await settle(lambda: server.services.sfu.ports.bound == 0)


def test_serve_refuses_bad_reachability_settings():
    """Each bad value stops ``serve`` at start with status 2, naming the
    setting (as a flag and as its environment twin)."""
    cases = [
        (["--rtc-ports", "9000-8000"], {}, "rtc_ports"),
        ([], {"SFU_RTC_PORTS": "40000"}, "rtc_ports"),
        (["--announced-ip", "my.host"], {}, "announced_ip"),
        (["--ice-host", "0.0.0.0"], {}, "ice_hosts"),
        (["--turn-url", "turn:127.0.0.1:3478"], {}, "turn_secret"),
        (["--turn-url", "http://x"], {"SFU_TURN_SECRET": "s"}, "turn_urls"),
    ]
    for args, env, name in cases:
        result = subprocess.run(
            [sys.executable, "-m", "signaling.cli", "serve", "--port", "0", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
        assert result.returncode == 2, (args, env, result.stderr)
        assert name in result.stderr, (args, result.stderr)
        assert "--" in result.stderr and "SFU_" in result.stderr


def test_announced_address_that_no_socket_is_bound_to():
    """In a namespace of its own where the host's address is 127.0.0.3 (the
    local route's source), a server bound to 0.0.0.0 announces 127.0.0.3:
    clients reach it only through that address, and two of them hear each
    other (tests/announced_probe.py)."""
    script = (
        "ip link set lo up && "
        "for net in 127.0.0.0/8 127.0.0.1; do ip route replace local $net dev lo "
        "proto kernel scope host src 127.0.0.3 table local; done && "
        f'exec "{sys.executable}" -m tests.announced_probe'
    )
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heard"] == {"alice": True, "bob": True}
    assert report["candidates"] and all(
        host == "127.0.0.3" for host, _, _ in report["candidates"]
    )
    assert set(report["selected_remote"]) == {"127.0.0.3"}
