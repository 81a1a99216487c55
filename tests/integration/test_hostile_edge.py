"""Limits at the edge, each tried as a stranger would (issue 15, findings 4-6):
work a client may cause is refused before it is done, and others are served
as before."""

import json
import subprocess
import sys
import time

import aiohttp
import pytest

from sfu import sdp_check
from signaling import auth
from signaling.config import Settings
from tests.conftest import SECRET
from tests.integration.test_cli import clean_env
from tests.load_sdp import real_offer
from tests.voice import settle


def candidates(count: int, start: int = 0) -> str:
    return "".join(
        f"a=candidate:{n} 1 udp 2122260223 10.{n // 250 % 250}.{n % 250}.1 "
        f"{40000 + n % 20000} typ host\r\n"
        for n in range(start, start + count)
    )


def with_candidates(sdp: str, count: int) -> str:
    return sdp.replace("a=mid:0\r\n", "a=mid:0\r\n" + candidates(count), 1)


async def test_candidates_in_the_sdp_count_against_the_cap(server, sockets):
    """An SDP with 3,000 candidates bypassed the trickle cap and stalled the
    loop 1.3 s: now the SDP's count toward the cap of 64 per connection."""
    ws = await sockets(server)
    await ws.join(server.token("mallory"))
    offer = await real_offer()
    started = time.monotonic()
    error = await ws.error(
        {
            "type": "offer",
            "pc": "publish",
            "sdp": with_candidates(offer, 3000),
            "sources": {"0": "microphone"},
        }
    )
    assert error["code"] == "bad_sdp" and "candidates" in error["message"]
    assert time.monotonic() - started < 1.0
    # 60 in the SDP are accepted; the trickle may add 4 more, not a fifth
    await ws.send(
        {
            "type": "offer",
            "pc": "publish",
            "sdp": with_candidates(offer, 60 - sdp_check.candidates(offer)),
            "sources": {"0": "microphone"},
            "id": "ok",
        }
    )
    assert (await ws.expect("answer"))["ref"] == "ok"
    for n in range(5):
        text = candidates(1, 100 + n).removeprefix("a=").strip()
        await ws.send(
            {
                "type": "candidate",
                "pc": "publish",
                "id": n,
                "candidate": {"candidate": text, "sdpMid": "0", "sdpMLineIndex": 0},
            }
        )
    error = await ws.expect("error")
    assert error["ref"] == 4 and "64 candidates" in error["message"]
    assert await ws.alive()


async def test_a_join_without_a_token_is_an_auth_failure(server, sockets):
    for join in (
        {"type": "join", "channel": "room", "kind": "voice"},
        {"type": "join", "token": 17, "channel": "room", "kind": "voice"},
    ):
        ws = await sockets(server)
        await ws.send(join)
        assert await ws.closed() == 4401
        assert not [m for m in ws.seen if m["type"] == "error"]


async def test_sockets_per_address_and_unjoined_sockets_are_capped(
    start_server, sockets
):
    server = await start_server(max_sockets_per_address=5, max_unjoined_sockets=3)
    joined = [await sockets(server) for _ in range(2)]
    for n, ws in enumerate(joined):
        await ws.join(server.token(f"user{n}"))
    idle = [await sockets(server) for _ in range(3)]  # the unjoined cap
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await sockets(server)
    assert refused.value.status == 429
    await idle[0].close()
    await settle(lambda: len(server.services.manager.unjoined) == 2)
    late = await sockets(server)  # a place again; now the address is full
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await sockets(server)
    assert refused.value.status == 429
    # those already in are served as before
    assert await joined[0].alive() and await late.alive()
    stats = server.services.manager.stats()
    assert stats["counters"]["refused_sockets"] == 2


async def test_a_trusted_proxy_names_the_client_others_do_not(start_server, sockets):
    server = await start_server(
        max_sockets_per_address=1, trusted_proxies=["127.0.0.1"]
    )
    first = await sockets(server, headers={"X-Forwarded-For": "203.0.113.7"})
    second = await sockets(server, headers={"X-Forwarded-For": "1.1.1.1, 203.0.113.8"})
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await sockets(server, headers={"X-Forwarded-For": "203.0.113.8"})
    remotes = {c.remote for c in server.services.manager.live.values()}
    assert remotes == {"203.0.113.7", "203.0.113.8"}
    assert await first.alive() and await second.alive()
    untrusted = await start_server(max_sockets_per_address=1)
    await sockets(untrusted, headers={"X-Forwarded-For": "203.0.113.9"})
    with pytest.raises(aiohttp.WSServerHandshakeError):  # the header is ignored
        await sockets(untrusted, headers={"X-Forwarded-For": "203.0.113.10"})


async def get(url: str, path: str, **kwargs) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(kwargs.pop("method", "GET"), url + path, **kwargs) as resp,
    ):
        return resp.status, await resp.text()


async def test_metrics_behind_a_bearer_token(start_server):
    server = await start_server(metrics_token="scrape-me-please")
    assert (await get(server.url, "/metrics"))[0] == 401
    bad = {"Authorization": "Bearer nope"}
    assert (await get(server.url, "/metrics", headers=bad))[0] == 401
    good = {"Authorization": "Bearer scrape-me-please"}
    status, text = await get(server.url, "/metrics", headers=good)
    assert status == 200 and "miscord_participants" in text


async def test_dev_login_only_for_loopback_names_and_members(start_server):
    server = await start_server(secret="")
    login = {"method": "POST", "json": {"user": "dora"}}
    assert (await get(server.url, "/api/dev-login", **login))[0] == 200
    # a page on a stranger's name pointed at 127.0.0.1 (DNS rebinding)
    rebound = {**login, "headers": {"Host": "evil.example:8080"}}
    assert (await get(server.url, "/api/dev-login", **rebound))[0] == 404
    named = {**login, "headers": {"Host": "app.localhost:8080"}}
    assert (await get(server.url, "/api/dev-login", **named))[0] == 200
    support = {"method": "POST", "json": {"user": "dora", "role": "support"}}
    status, text = await get(server.url, "/api/dev-login", **support)
    assert status == 403 and "member" in text
    allowed = await start_server(secret="", dev_support=True)
    assert (await get(allowed.url, "/api/dev-login", **support))[0] == 200


def test_secrets_are_long_enough_and_may_come_from_a_file(tmp_path):
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret="short")
    path = tmp_path / "secret"
    path.write_text("s" * 40 + "\n")
    assert Settings(secret_file=str(path)).secret == "s" * 40
    path.write_text("s" * 31)
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret_file=str(path))
    served = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "serve", "--secret", "short"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert served.returncode == 2 and "secret" in served.stderr


def test_the_client_stats_of_a_peer_are_bounded_and_trimmed_after_leave():
    from diagnostics.records import CLIENT_REPORTS, PeerRecord
    from diagnostics.store import CLIENT_KEEP, PeerStore

    store = PeerStore(retention=1800, max_departed=10)
    record = PeerRecord("p", "u", "n", "c", joined_at=0.0, history=300)
    store.add(record)
    for n in range(CLIENT_REPORTS * 3):
        record.client.append(json.dumps(n))  # any report
    assert len(record.client) == CLIENT_REPORTS
    store.depart("p", "left", 100.0)
    store.prune(100.0 + CLIENT_KEEP / 2)
    assert len(record.client) == CLIENT_REPORTS  # still diagnosable in full
    store.prune(100.0 + CLIENT_KEEP + 1)
    assert list(record.client) == [json.dumps(CLIENT_REPORTS * 3 - 1)]


async def test_a_forged_relay_header_names_nobody(start_server, sockets):
    """Fronts and nodes name a relayed client in a header signed with the
    shared secret; a client writing that header itself (unsigned, or signed
    with a guess) is counted under its own address."""
    server = await start_server(max_sockets_per_address=1)
    relayed = {auth.RELAYED_FOR: auth.relay_stamp(SECRET, "203.0.113.20")}
    await sockets(server, headers=relayed)  # a real front's stamp: its client
    await sockets(server)  # 127.0.0.1's one socket
    for forged in (
        "203.0.113.21",
        "203.0.113.21 " + "0" * 64,
        auth.relay_stamp("another-secret-of-at-least-32-bytes!", "203.0.113.21"),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await sockets(server, headers={auth.RELAYED_FOR: forged})
        assert refused.value.status == 429
    remotes = sorted(c.remote for c in server.services.manager.live.values())
    assert remotes == ["127.0.0.1", "203.0.113.20"]
