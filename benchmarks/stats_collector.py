"""Stats collector cost: CPU per peer of one diagnostics sample.

A server process with N participants (everyone publishes one microphone and
receives all others, so N x (N-1) forwarded streams) runs its stats collector
every ``--interval`` seconds. The collector times each pass itself
(``miscord_stats_collector_seconds`` in /metrics); the server's own CPU time
over the same seconds gives the ratio that matters: the collector's share of
what the server spends. Clients run in two worker processes and never encode
or decode (a pre-encoded Opus frame is packetized as is, received RTP is only
counted), so they stay cheap. Sizes run in one invocation, so the ratios
compare like with like.

    scripts/bench stats_collector --sizes 4,8,12 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import (
    SECRET,
    ServerProcess,
    Worker,
    emit,
    machine,
    write_section,
)

WORKERS = 2
DEFAULT_INTERVAL = 2.0


# --- clients (worker processes) ---------------------------------------------------


async def worker(url: str, users: list[str]) -> None:
    from miscord_client.client import VoiceClient
    from miscord_client.load.media import StampedAudio, encode_tone
    from signaling import auth

    opus = encode_tone()
    clients = []
    for user in users:
        token = auth.issue(SECRET, user, ["*"], name=user)
        client = VoiceClient(url, token, raw_sink=lambda remote, packet: None)
        await client.join("bench")
        await client.publish(microphone=StampedAudio(opus_frames=opus))
        clients.append(client)
    emit({"ready": [c.peer_id for c in clients]})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# --- the measuring side -----------------------------------------------------------


@dataclass
class Result:
    peers: int
    streams: int
    ticks: int
    tick_ms: float
    per_peer_us: float
    share_of_server: float
    share_at_default: float
    server_core: float


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def wait_streams(server: ServerProcess, streams: int) -> None:
    """Until every subscription forwards (the forwarded-packet rate settles)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        subscribed = 0
        for peer in await server.get("/api/peers"):
            stats = await server.get(f"/api/peers/{peer['peer_id']}/stats")
            latest = (stats.get("latest") or {}).get("stats", [])
            subscribed += sum(
                1 for s in latest if s["type"] == "outbound-rtp" and s["packetsSent"]
            )
        if subscribed >= streams:
            return
        await asyncio.sleep(1.0)
    raise RuntimeError("the room never forwarded every stream")


async def measure(size: int, seconds: float, interval: float) -> Result:
    server = await ServerProcess.start(
        "--stats-interval", str(interval), "--max-participants", str(size + 1)
    )
    workers: list[Worker] = []
    try:
        users = [f"u{i}" for i in range(size)]
        for w in range(WORKERS):
            workers.append(
                await Worker.start(__spec__.name, server.url, *users[w::WORKERS])
            )
        for worker_ in workers:
            await worker_.recv(timeout=120)
        streams = size * (size - 1)
        await wait_streams(server, streams)
        await asyncio.sleep(2 * interval)
        before, cpu_before = await scrape(server.url), server.cpu_seconds()
        await asyncio.sleep(seconds)
        after, cpu_after = await scrape(server.url), server.cpu_seconds()
    finally:
        for worker_ in workers:
            await worker_.stop()
        server.stop()
    ticks = int(
        after["miscord_stats_collector_seconds_count"]
        - before["miscord_stats_collector_seconds_count"]
    )
    spent = (
        after["miscord_stats_collector_seconds_sum"]
        - before["miscord_stats_collector_seconds_sum"]
    )
    cpu = cpu_after - cpu_before
    tick = spent / ticks
    # the same passes every DEFAULT_INTERVAL s: fewer, the rest unchanged
    at_default = spent * interval / DEFAULT_INTERVAL
    return Result(
        size,
        streams,
        ticks,
        tick * 1000,
        tick / size * 1e6,
        spent / cpu,
        at_default / (cpu - spent + at_default),
        cpu / seconds,
    )


def section(results: list[Result], seconds: float, interval: float) -> str:
    rows = [
        f"| {r.peers} | {r.streams} | {r.ticks} | {r.tick_ms:.2f} | "
        f"{r.per_peer_us:.0f} | {100 * r.share_of_server:.1f} % | "
        f"{100 * r.share_at_default:.1f} % | {100 * r.server_core:.0f} % |"
        for r in results
    ]
    return "\n".join(
        [
            "## Diagnostics: stats collector cost",
            "",
            f"Machine: {machine()}. Command: `scripts/bench stats_collector "
            f"--sizes {','.join(str(r.peers) for r in results)} "
            f"--seconds {seconds:g} --interval {interval:g}`.",
            "",
            "Everyone publishes one microphone and receives all others. A pass "
            "samples every live peer's `stats()`, derives the per-direction rates "
            "and copies the level history; the server times each pass itself "
            "(`miscord_stats_collector_seconds`). *Share of server CPU* is the "
            "collector's time over the server process's CPU time in the same "
            f"seconds; it ran every {interval:g} s here to gather more passes, "
            "and the next column scales it to the default `stats_interval` of "
            "2 s. *Server CPU* is the whole server process, 100 % = one core.",
            "",
            "| peers | forwarded streams | passes | ms per pass | µs per peer "
            f"per pass | collector share of server CPU (every {interval:g} s) | "
            "same, every 2 s | server CPU |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "A pass costs a few hundred µs per peer and grows slowly with the "
            "streams each peer receives (one outbound-rtp and one "
            "remote-inbound-rtp per stream). About a third of it is deriving "
            "the rates; the rest is `Participant.stats()` itself (aiortc's "
            "transport stats stamp every entry with `datetime.now()`). At the "
            "default interval the collector stays under 1 % of the server's "
            "CPU. The load clients send no ssrc-audio-level extension, so the "
            "level copy (one small record per second per microphone) is not "
            "in these numbers.",
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8,12")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = await measure(size, args.seconds, args.interval)
        print(json.dumps(result.__dict__), flush=True)
        results.append(result)
    body = section(results, args.seconds, args.interval)
    print(body)
    if not args.no_write:
        write_section("stats_collector", body)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(worker(sys.argv[2], sys.argv[3:]))
    else:
        asyncio.run(main())
