"""The connection manager: one connection per user and kind, nothing piles up."""

import asyncio

import aiohttp

from signaling.protocol import Close


def registries_empty(services) -> bool:
    manager = services.manager
    return not (
        manager.live
        or manager.by_user
        or manager.by_channel
        or manager.by_peer
        or services.sfu.participants
        or services.sfu.channels
        or manager.voices.by_peer
        or manager.voices.by_user
        or manager.voices._tokens
    )


async def test_newer_connection_replaces_older_of_same_kind(server, sockets):
    watcher = await sockets(server)
    await watcher.join(server.token("watcher"))
    first = await sockets(server)
    old_peer = (await first.join(server.token("alice")))["peer_id"]
    await watcher.expect("participant_joined")
    events_conn = await sockets(server)
    await events_conn.join(server.token("alice"), kind="events")

    second = await sockets(server)
    new_peer = (await second.join(server.token("alice")))["peer_id"]

    assert await first.closed() == Close.REPLACED
    left = await watcher.expect("participant_left")
    assert left == {
        "type": "participant_left",
        "peer_id": old_peer,
        "reason": "replaced",
    }
    joined = await watcher.expect("participant_joined")
    assert joined["participant"]["peer_id"] == new_peer
    assert watcher.seen.index(left) < watcher.seen.index(joined)
    # the events connection of the same user is untouched
    assert await events_conn.alive()
    manager = server.services.manager
    assert manager.counters["replaced"] == 1
    assert len([c for c in manager.live.values() if c.user_id == "alice"]) == 2
    assert set(server.services.sfu.participants) == {
        new_peer,
        manager.current("watcher", "voice").peer_id,
    }


async def test_replacement_never_has_two_registered(server, sockets):
    """Concurrent joins of one user end with exactly one live voice connection."""
    conns = [await sockets(server) for _ in range(5)]
    token = server.token("alice")
    await asyncio.gather(
        *(
            c.send({"type": "join", "token": token, "channel": "room", "kind": "voice"})
            for c in conns
        )
    )
    await asyncio.sleep(1.0)
    manager = server.services.manager
    voice = [c for c in manager.live.values() if c.kind == "voice"]
    assert len(voice) == 1
    assert len(server.services.sfu.participants) == 1
    assert manager.counters["replaced"] == 4


async def test_500_cycles_leave_nothing_behind(start_server, sockets):
    """Voice sockets that close without leave are kept for a resume: the short
    grace ends them (and their timers) too."""
    server = await start_server(resume_grace=0.2)
    tasks_before = len(asyncio.all_tasks())
    for i in range(500):
        ws = await sockets(server)
        kind = "voice" if i % 2 else "events"
        await ws.join(server.token(f"user{i % 7}"), channel=f"ch{i % 3}", kind=kind)
        if i % 4 == 3:
            await ws.send({"type": "leave"})
            assert await ws.closed() == 1000
        await ws.close()
    for _ in range(50):
        if registries_empty(server.services):
            break
        await asyncio.sleep(0.05)
    assert registries_empty(server.services)
    manager = server.services.manager
    assert manager.counters["opened"] == manager.counters["closed"] == 500
    assert not manager._user_locks
    assert len(manager.tasks) == 2  # heartbeat and sweep
    assert len(manager.voices.tasks) == 0  # every grace timer ended
    assert len(asyncio.all_tasks()) <= tasks_before + 1


async def test_client_that_stops_answering_is_reaped_by_heartbeat(
    start_server, sockets
):
    server = await start_server(
        heartbeat_interval=0.3, heartbeat_timeout=1.5, resume_grace=0.5
    )
    watcher = await sockets(server)
    await watcher.join(server.token("watcher"))
    # autoping off and never reading: pings go unanswered, no close frame ever
    silent = await sockets(server, autoping=False)
    await silent.send(
        {
            "type": "join",
            "token": server.token("ghost"),
            "channel": "room",
            "kind": "voice",
        }
    )
    left = await watcher.expect("participant_left", timeout=5)
    assert left["reason"] == "timeout"
    manager = server.services.manager
    assert manager.counters["reaped_stale"] == 1
    assert manager.current("ghost", "voice") is None
    assert await watcher.alive()  # the answering client was never disturbed


async def test_broadcast_reaches_everyone_when_one_socket_is_broken(server, sockets):
    members = [await sockets(server) for _ in range(4)]
    for i, ws in enumerate(members):
        await ws.join(server.token(f"m{i}"), kind="events")
    manager = server.services.manager
    broken = manager.current("m1", "events")
    broken.request.transport.abort()  # the TCP connection dies underneath
    sent = manager.broadcast("room", {"type": "speaking", "speakers": []})
    assert sent == 4
    for i, ws in enumerate(members):
        if i != 1:
            assert await ws.expect("speaking") == {"type": "speaking", "speakers": []}
    for _ in range(40):
        if manager.current("m1", "events") is None:
            break
        await asyncio.sleep(0.05)
    assert manager.current("m1", "events") is None
    assert manager.counters["dropped_broken"] + manager.counters["closed"] >= 1
    for i, ws in enumerate(members):
        if i != 1:
            assert await ws.alive()


async def test_slow_consumer_is_dropped_not_waited_for(start_server, sockets):
    server = await start_server(outbox_limit=20)
    fast = await sockets(server)
    await fast.join(server.token("fast"), kind="events")
    slow = await sockets(server)
    await slow.join(server.token("slow"), kind="events")
    manager = server.services.manager
    conn = manager.current("slow", "events")
    for _ in range(25):
        manager.send(conn, {"type": "speaking", "speakers": []})
    await asyncio.sleep(0.3)
    assert manager.current("slow", "events") is None
    assert manager.counters["dropped_broken"] == 1
    assert await fast.alive()


async def test_disconnect_needs_only_the_socket(start_server, sockets):
    """Without leave the participant is kept for its grace, then gone."""
    server = await start_server(resume_grace=0.5)
    watcher = await sockets(server)
    await watcher.join(server.token("watcher"))
    ws = await sockets(server)
    peer = (await ws.join(server.token("alice")))["peer_id"]
    await ws.ws.close()  # no leave message
    left = await watcher.expect("participant_left")
    assert left["peer_id"] == peer and left["reason"] == "timeout"
    assert peer not in server.services.sfu.participants


async def test_stats_endpoint_counts_exactly(server, sockets):
    support = server.token("staff", role="support")
    a = await sockets(server)
    await a.join(server.token("alice"), channel="one")
    b = await sockets(server)
    await b.join(server.token("bob"), channel="one", kind="events")
    c = await sockets(server)
    await c.join(server.token("carol"), channel="two")
    a2 = await sockets(server)
    await a2.join(server.token("alice"), channel="two")  # replaces a
    bad = await sockets(server)
    await bad.send(
        {"type": "join", "token": "garbage", "channel": "one", "kind": "voice"}
    )
    assert await bad.closed() == 4401
    await c.error("{oops")
    await c.error({"type": "nope"})
    await c.send({"type": "leave"})
    assert await c.closed() == 1000
    await asyncio.sleep(0.1)

    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{server.url}/api/debug/websocket-stats",
            headers={"Authorization": f"Bearer {support}"},
        ) as resp:
            assert resp.status == 200
            stats = await resp.json()
        async with http.get(
            f"{server.url}/api/debug/websocket-stats",
            headers={"Authorization": f"Bearer {server.token('bob')}"},
        ) as resp:
            assert resp.status == 403
        async with http.get(f"{server.url}/api/debug/websocket-stats") as resp:
            assert resp.status == 401

    assert stats["live"] == 2
    assert stats["by_kind"] == {"voice": 1, "events": 1}
    assert stats["by_channel"] == {"one": {"events": 1}, "two": {"voice": 1}}
    assert stats["counters"] == {
        "opened": 5,
        "closed": 3,
        "replaced": 1,
        "reaped_stale": 0,
        "dropped_broken": 0,
        "rejected_auth": 1,
        "refused_sockets": 0,
        "kept": 0,
        "resumed": 0,
        "resume_refused": 0,
    }
    assert stats["errors_by_code"] == {"bad_json": 1, "unknown_type": 1}
    assert stats["kept_for_resume"] == []
    alice = next(m for m in stats["connections"] if m["user_id"] == "alice")
    assert alice["channel"] == "two" and alice["kind"] == "voice" and alice["peer_id"]
    for field in (
        "remote_address",
        "user_agent",
        "connected_at",
        "last_activity_ago",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "name",
    ):
        assert field in alice
    assert alice["messages_in"] == 1 and alice["remote_address"] == "127.0.0.1"


async def test_sweep_repairs_stale_entries(server, sockets):
    ws = await sockets(server)
    await ws.join(server.token("alice"), kind="events")
    manager = server.services.manager
    conn = manager.current("alice", "events")
    await conn.ws.close()  # closed underneath without the manager's knowledge
    conn.closing = False
    manager.live[conn.id] = conn
    await manager.sweep()
    assert manager.current("alice", "events") is None and conn.id not in manager.live


async def test_shutdown_closes_every_connection_with_1001(start_server, sockets):
    server = await start_server()
    conns = [await sockets(server) for _ in range(3)]
    for i, ws in enumerate(conns):
        await ws.join(server.token(f"u{i}"), kind="voice" if i else "events")
    await server.services.manager.shutdown()
    await server.services.sfu.close()
    assert [await ws.closed() for ws in conns] == [1001, 1001, 1001]
    assert registries_empty(server.services)
    assert len(server.services.manager.tasks) == 0
