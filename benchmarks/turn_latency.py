"""Latency added by TURN: a voice room whose clients reach the server directly,
and the same room with every client relay-only through a real coturn on
127.0.0.1, in alternating rounds of one run (so the machine's mood falls on
both alike).

Each packet of a relayed room crosses coturn twice (publisher -> coturn ->
server, server -> coturn -> subscriber). Latency is the publisher's stamp to
the subscriber's RTP hook (``benchmarks/voice_room.py``), both clients'
event loops included.

    scripts/bench turn_latency --size 4 --rounds 4 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from benchmarks.common import fmt, machine, percentile, publish
from benchmarks.voice_room import Result, run_room
from tests.turn import TURN_SECRET, spare_ports, start_coturn


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # room for every round's allocations: a killed worker's stay 10 min
        coturn = start_coturn(Path(tmp), spare_ports(1000))
        try:
            server_args = ("--turn-url", coturn.url, "--turn-secret", TURN_SECRET)
            runs: dict[str, list[Result]] = {"direct": [], "relay": []}
            order = list(runs)
            for n_round in range(args.rounds):
                for path in order if n_round % 2 == 0 else order[::-1]:
                    result = await run_room(
                        "fast",
                        args.size,
                        args.seconds,
                        # direct clients get the TURN server too (as browsers
                        # do) and must still pick their direct pairs
                        server_args=server_args,
                        relay=path == "relay",
                    )
                    wanted = "relay" if path == "relay" else "host"
                    if set(result.paths) != {wanted} or not result.complete:
                        raise RuntimeError(
                            f"{path} room ran on {result.paths} "
                            f"(complete: {result.complete})"
                        )
                    runs[path].append(result)
                    print(
                        f"{path:6} p50 {ms(result.latencies, 0.5)} ms, p99 "
                        f"{ms(result.latencies, 0.99)} ms, loss "
                        f"{fmt(result.loss, 2)} %",
                        flush=True,
                    )
        finally:
            coturn.stop()
    lines = [
        "| path | samples | p50 ms | p90 ms | p99 ms | loss % |",
        "|---|---|---|---|---|---|",
    ]
    pooled = {
        path: [x for r in results for x in r.latencies]
        for path, results in runs.items()
    }
    for path, results in runs.items():
        lost = sum(r.lost for r in results)
        expected = sum(r.expected for r in results)
        lines.append(
            f"| {path} | {len(pooled[path])} | {ms(pooled[path], 0.5)} | "
            f"{ms(pooled[path], 0.9)} | {ms(pooled[path], 0.99)} | "
            f"{fmt(100 * lost / expected if expected else None, 2)} |"
        )
    added = {
        q: (percentile(pooled["relay"], q) or 0)
        - (percentile(pooled["direct"], q) or 0)
        for q in (0.5, 0.99)
    }
    body = (
        "## Latency through TURN (`benchmarks/turn_latency.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench turn_latency --size "
        f"{args.size} --rounds {args.rounds} --seconds {args.seconds}`: a room of "
        f"{args.size} (everyone publishing Opus-sized packets every 20 ms, hearing "
        "everyone), its clients direct (handed the TURN server too) or relay-only "
        "through coturn 4.6 on 127.0.0.1 "
        "(two TURN hops per packet; every client connection's selected pair checked "
        "to be relay or host), rounds alternating in one run; latency is the "
        "publisher's stamp to the subscriber's RTP hook, pooled over the rounds.\n\n"
        + "\n".join(lines)
        + f"\n\nAdded by TURN: p50 {added[0.5] * 1000:.2f} ms, p99 "
        f"{added[0.99] * 1000:.2f} ms (on loopback: coturn's own processing, twice).\n"
    )
    publish(args, "turn_latency", body)


def ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    return fmt(value * 1000 if value is not None else None, 2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-write", dest="write", action="store_false")
    asyncio.run(main(parser.parse_args()))
