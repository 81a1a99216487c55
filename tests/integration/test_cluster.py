"""Two nodes sharing a real ``redis-server`` (contract 1.1, "more than one
machine"), both on 127.0.0.1: a channel joined through either node is one
call (signaling relayed to the channel's node, media straight to it) with
one presence; a node killed without draining leaves no ghost once its lease
lapses, and its channel can be joined again through the survivor; Redis
paused for a few seconds disturbs no running call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from benchmarks.common import ServerProcess
from miscord_client.client import VoiceClient
from miscord_client.protocol import Close
from tests.load_support import token
from tests.redis_server import RedisServer, start_redis
from tests.voice import Arrivals, Ears, settle

LEASE = 4.0  # seconds (the default is 10)


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[RedisServer]:
    server = start_redis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for _ in range(2):
            started.append(
                await ServerProcess.start(
                    "--redis-url", redis_server.url, "--cluster-lease", str(LEASE)
                )
            )
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def voice(tone_voices):
    """``voice(node, user, channel, freq)``: a tone publisher through ``node``."""
    return lambda node, user, *args, **kwargs: tone_voices(
        node.url, token(user), *args, **kwargs
    )


async def hear_each_other(a: VoiceClient, fa: float, b: VoiceClient, fb: float) -> None:
    for client, other, freq in ((a, b, fb), (b, a, fa)):
        ears = Ears(client)
        await ears.hears(other.peer_id, freq, timeout=10)
        await ears.stop()


async def listed(node: ServerProcess, expected: dict[str, int]) -> None:
    """Wait until ``node``'s /api/channels shows ``expected`` (channel: size)."""
    deadline = time.monotonic() + 3 * LEASE
    while True:
        channels = await node.get("/api/channels")
        seen = {c["channel"]: len(c["participants"]) for c in channels}
        if seen == expected:
            return
        assert time.monotonic() < deadline, f"/api/channels: {channels}"
        await asyncio.sleep(0.2)


async def test_a_channel_joined_through_two_nodes_is_one_call(nodes, voice):
    a, b = nodes
    alice = await voice(a, "alice", "gamma", 440.0)
    bob = await voice(b, "bob", "gamma", 660.0)
    await hear_each_other(alice, 440.0, bob, 660.0)
    # one presence: each saw the other join, whichever node it came through
    assert await alice.wait_for_message("participant_joined")
    joined = await bob.wait_for_message("joined")
    assert [p["peer_id"] for p in joined["participants"]] == [alice.peer_id]
    # the channel lives on a's workers; b only relays
    held_by_a = {c for w in await a.get("/api/debug/workers") for c in w["channels"]}
    held_by_b = {c for w in await b.get("/api/debug/workers") for c in w["channels"]}
    assert "gamma" in held_by_a and "gamma" not in held_by_b
    await listed(b, {"gamma": 2})
    await listed(a, {"gamma": 2})


async def test_a_dead_node_leaves_no_ghost(nodes, voice):
    a, b = nodes
    await voice(a, "alice", "gamma", 440.0)
    bob = await voice(b, "bob", "gamma", 660.0, resume=False)
    await listed(b, {"gamma": 2})
    killed_at = time.monotonic()
    a.proc.kill()  # no drain: its workers follow it (their stdin closes)
    await bob.wait_closed(timeout=12)
    print(f"\nbob closed {bob.close_code} {time.monotonic() - killed_at:.3f} s after")
    assert bob.close_code == Close.MEDIA_LOST
    await listed(b, {})  # no ghost once a's record lapsed
    print(f"gone from /api/channels {time.monotonic() - killed_at:.3f} s after")
    carol = await voice(b, "carol", "gamma", 880.0)
    bob_again = await voice(b, "bob", "gamma", 660.0)
    await hear_each_other(carol, 880.0, bob_again, 660.0)
    await listed(b, {"gamma": 2})


async def test_a_redis_pause_does_not_disturb_calls(nodes, voice, redis_server):
    a, b = nodes
    alice = await voice(a, "alice", "gamma", 440.0)
    arrivals = Arrivals()
    bob = await voice(b, "bob", "gamma", 660.0, raw_sink=arrivals)
    key = (alice.peer_id, "microphone")
    await settle(lambda: len(arrivals.times.get(key, ())) > 50, timeout=10)
    paused_at = time.monotonic()
    redis_server.pause()
    try:
        await asyncio.sleep(1.0)
        # signaling of the running call goes on: a mute reaches bob
        await alice.mute("microphone", True)
        assert await bob.wait_for_message(
            "track_muted", peer_id=alice.peer_id, muted=True
        )
        await alice.mute("microphone", False)
        await asyncio.sleep(max(0.0, paused_at + 3.0 - time.monotonic()))
    finally:
        redis_server.resume()
    await asyncio.sleep(2.0)
    gap = arrivals.longest_gap(key, paused_at - 0.5)
    print(f"\nlongest gap in alice's audio at bob over the pause: {gap * 1000:.0f} ms")
    assert gap < 0.3
    assert alice.close_code is None and bob.close_code is None
    await listed(b, {"gamma": 2})
