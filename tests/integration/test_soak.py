"""Soak: join -> publish -> leave cycles leave nothing behind.

The server runs in its own process (tests/load_server.py: ``serve`` plus a
census route), so its file descriptors and RSS are its alone, while its asyncio
tasks, peer connections and registries are counted from inside. The clients
cycle in another process (tests/load_churn.py), over four channels that each
keep one standing participant.

The baseline is taken after a warm-up as long as the soak itself: by then the
standing participants have their subscribe connections and the process has
reached its memory plateau. (Closed peer connections are reference cycles that
wait for the cyclic collector's rare full runs, so early on garbage raises the
heap's high-water mark, which glibc keeps: measured from the first census, RSS
rises ~15 % over the first ~1,000 cycles, then < 1 % per further 1,000.)
``--timeline-max-peers 20`` keeps the diagnostics' retention of departed peers
(bounded by design, ~12 KiB each, up to 2,000 by default) out of the growth.
After the cycles every count must equal the baseline again and RSS must have
grown less than 10 %; the growth since the first census is printed too.

The default suite runs 100 cycles; ``scripts/soak`` runs the 1,000-cycle one.
"""

import asyncio

import pytest

from benchmarks.common import LOOPBACK_CROWD, Worker
from tests.load_support import (
    CensusServer,
    assert_no_leaked_peer_connections,
    changed,
)

CHANNELS = ["soak-a", "soak-b", "soak-c", "soak-d"]


async def stable_census(server, timeout=20.0):
    """A census equal to the one before it: nothing is still being torn down."""
    previous = await server.census()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await asyncio.sleep(0.5)
        now = await server.census()
        if not changed(previous, now):
            return now
        assert asyncio.get_running_loop().time() < deadline, changed(previous, now)
        previous = now


async def soak(cycles: int, concurrency: int) -> None:
    server = await CensusServer.start("--timeline-max-peers", "20", *LOOPBACK_CROWD)
    churn = await Worker.start("tests.load_churn", server.url, ",".join(CHANNELS))
    try:

        async def run(cmd: dict, timeout: float) -> dict:
            await churn.send(cmd)
            reply = await churn.recv(timeout)
            assert not reply.get("failed"), reply["failed"][:5]
            return reply

        await run({"cmd": "standing"}, 60)
        first = await server.census()
        await run(
            {"cmd": "cycles", "first": 0, "count": cycles, "concurrency": concurrency},
            60 + cycles,
        )
        baseline = await stable_census(server)
        assert baseline["participants"] == len(CHANNELS)
        result = await run(
            {
                "cmd": "cycles",
                "first": cycles,
                "count": cycles,
                "concurrency": concurrency,
            },
            60 + cycles,
        )
        assert result["done"] == cycles
        after = await server.settled(baseline, timeout=30)
        growth = after["rss"] / baseline["rss"] - 1
        print(
            f"\n{cycles} cycles in {result['seconds']:.1f} s (cycle p50 "
            f"{result['cycle_p50']:.2f} s, max {result['cycle_max']:.2f} s); RSS "
            f"{first['rss'] / 2**20:.1f} (first) -> {baseline['rss'] / 2**20:.1f} "
            f"(warmed up) -> {after['rss'] / 2**20:.1f} MiB ({100 * growth:+.1f} %); "
            f"longest GC pause {after['gc']['gen2']['max_ms']} ms; census changes: "
            f"{changed(baseline, after)}"
        )
        assert_no_leaked_peer_connections(baseline, after, at_least=cycles // 2)
        assert not changed(baseline, after), changed(baseline, after)
        assert growth < 0.10
        # and once the standing participants leave, nothing is left at all
        await run({"cmd": "leave"}, 30)
        empty = await server.until(lambda c: c["participants"] == 0)
        assert empty["connections"] == empty["channels"] == empty["by_user"] == 0
    finally:
        await churn.stop()
        server.stop()


async def test_soak_100_cycles():
    await soak(100, concurrency=4)


@pytest.mark.soak
async def test_soak_1000_cycles():
    await soak(1000, concurrency=8)
