"""``serve --workers 2`` (contract 1.1, "More than one process"): channels
spread over two worker processes and everyone hears everyone; a worker
killed with SIGKILL costs only its own channels (their sockets close 1011
within 2 s, the other worker's call has no audio gap over 300 ms), it is
replaced, and its participants join again and hear each other.

The server is ``python -m signaling.cli serve`` in its own process, the
clients real aiortc peers in this one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from benchmarks.common import ServerProcess
from miscord_client.protocol import Close
from tests.load_support import token
from tests.voice import Arrivals, Ears, settle


@pytest.fixture
async def server() -> AsyncIterator[ServerProcess]:
    server = await ServerProcess.start("--workers", "2")
    try:
        await settle_workers(server, 2)
        yield server
    finally:
        server.stop()


async def settle_workers(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        workers: list[dict[str, Any]] = await server.get("/api/debug/workers")
        if len(workers) == count:
            return workers
        assert time.monotonic() < deadline, f"workers: {workers}"
        await asyncio.sleep(0.1)


@pytest.fixture
def voice(server, tone_voices):
    """``voice(user, channel, freq)``: a tone publisher of ``server``."""
    return lambda user, *args, **kwargs: tone_voices(
        server.url, token(user), *args, **kwargs
    )


def holder(workers: list[dict[str, Any]], channel: str) -> dict[str, Any]:
    return next(w for w in workers if channel in w["channels"])


async def test_channels_spread_over_two_workers_and_everyone_hears_everyone(
    server, voice
):
    tones = {"alice": 440.0, "bob": 660.0, "carol": 880.0, "dave": 1000.0}
    rooms = {"alice": "alpha", "bob": "alpha", "carol": "beta", "dave": "beta"}
    clients = {u: await voice(u, rooms[u], tones[u]) for u in tones}
    for user, client in clients.items():
        ears = Ears(client)
        for other, peer in clients.items():
            if other != user and rooms[other] == rooms[user]:
                await ears.hears(peer.peer_id, tones[other], timeout=10)
        await ears.stop()
    workers = await settle_workers(server, 2)
    await settle_placement(server, {"alpha", "beta"})
    workers = await server.get("/api/debug/workers")
    print(f"\n{workers}")
    alpha, beta = holder(workers, "alpha"), holder(workers, "beta")
    assert alpha["pid"] != beta["pid"]
    assert alpha["participants"] == beta["participants"] == 2
    assert {w["pid"] for w in workers} == {p.pid for p in server.ps.children()}
    # presence and the channel list come from both workers
    listed = await server.get("/api/channels")
    assert [c["channel"] for c in listed] == ["alpha", "beta"]
    metrics = await server.text("/metrics")
    assert 'worker="0"' in metrics and 'worker="1"' in metrics
    # after leave nothing is left: not in the front, not in a worker
    for client in clients.values():
        await client.leave()
    deadline = time.monotonic() + 10
    while True:
        stats = await server.get("/api/debug/websocket-stats")
        front = stats["front"]
        held = [w["channels"] for w in await server.get("/api/debug/workers")]
        census = (front["sockets"], front["users"], front["addresses"], held)
        if census == (0, 0, 0, [[], []]) and front["placed_channels"] == 0:
            break
        assert time.monotonic() < deadline, f"left behind: {census} {front}"
        await asyncio.sleep(0.2)
    assert all(w["live"] == 0 for w in stats["workers"])


async def settle_placement(server: ServerProcess, channels: set[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        workers = await server.get("/api/debug/workers")
        held = {c for w in workers for c in w["channels"]}
        if channels <= held:
            return
        assert time.monotonic() < deadline, f"workers: {workers}"
        await asyncio.sleep(0.1)


async def test_a_killed_worker_costs_only_its_channels(server, voice):
    # alpha: one SDK client that resumes (and so rejoins) by itself, one that
    # does not (to see its close code)
    alice = await voice("alice", "alpha", 440.0)
    bob = await voice("bob", "alpha", 660.0, resume=False)
    arrivals = Arrivals()
    carol = await voice("carol", "beta", 880.0, raw_sink=arrivals)
    dave = await voice("dave", "beta", 1000.0)
    key = (dave.peer_id, "microphone")
    await settle(lambda: len(arrivals.times.get(key, ())) > 50, timeout=10)
    await settle_placement(server, {"alpha", "beta"})
    workers = await server.get("/api/debug/workers")
    doomed = holder(workers, "alpha")
    assert doomed["pid"] != holder(workers, "beta")["pid"]

    killed_at = time.monotonic()
    os.kill(doomed["pid"], signal.SIGKILL)
    await bob.wait_closed(timeout=5)
    closed_after = time.monotonic() - killed_at
    print(f"\nbob's socket closed {bob.close_code} {closed_after:.3f} s after the kill")
    assert bob.close_code == Close.MEDIA_LOST
    assert closed_after < 2.0

    # a new worker takes the dead one's place within 10 s
    deadline = killed_at + 10
    while True:
        workers = await server.get("/api/debug/workers")
        pids = {w["pid"] for w in workers}
        if len(workers) == 2 and doomed["pid"] not in pids:
            break
        assert time.monotonic() < deadline, f"not replaced: {workers}"
        await asyncio.sleep(0.1)
    print(f"replaced {time.monotonic() - killed_at:.3f} s after the kill")

    # alice's SDK joined again by itself; bob joins again by hand
    await alice.wait_for(lambda: alice.rejoins == 1, timeout=15)
    bob_again = await voice("bob", "alpha", 660.0)
    ears = Ears(bob_again)
    await ears.hears(alice.peer_id, 440.0, timeout=10)
    await ears.stop()
    ears = Ears(alice)
    await ears.hears(bob_again.peer_id, 660.0, timeout=10)
    await ears.stop()

    # beta, on the other worker, noticed nothing
    gap = arrivals.longest_gap(key, killed_at - 0.5)
    print(f"longest gap in dave's audio at carol: {gap * 1000:.0f} ms")
    assert gap < 0.3
    assert carol.close_code is None and dave.close_code is None
    left = [m for m in carol.messages if m.get("type") == "participant_left"]
    assert left == []
