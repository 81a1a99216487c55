"""One shared screen to V viewers: server CPU per viewer, forwarded packets/s,
latency and loss.

The sharer sends a 1080p-like screen: synthetic VP8-framed frames of the size a
~2 Mbit/s 15 fps share produces (a keyframe every 2 s), stamped with their send
time; viewers count RTP packets without decoding.

    scripts/bench screen_share --viewers 1,4,8,16
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from benchmarks.common import (
    SECRET,
    ServerProcess,
    Worker,
    emit,
    fmt,
    machine,
    percentile,
    publish,
    serve_counts,
)

BITRATE = 2_000_000
WORKERS = 2


async def run(viewers: int, seconds: float, mode: str) -> dict:
    server = await ServerProcess.start("--forwarding", mode)
    workers: list[Worker] = []
    try:
        sharer = await Worker.start(__spec__.name, server.url, "share", "sharer")
        workers.append(sharer)
        await sharer.recv(timeout=60)
        names = [f"v{i}" for i in range(viewers)]
        for w in range(WORKERS):
            mine = names[w::WORKERS]
            if mine:
                workers.append(
                    await Worker.start(
                        __spec__.name, server.url, "view", ",".join(mine)
                    )
                )
        for w in workers[1:]:
            assert (await w.recv(timeout=60))["ready"]
        await asyncio.sleep(2)
        for w in workers[1:]:
            await w.send({"cmd": "start"})
            await w.recv()
        await server.get("/api/debug/forwarding?reset=1")
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        forwarding = await server.get("/api/debug/forwarding")
        for w in workers[1:]:
            await w.send({"cmd": "stop"})
        reports = [await w.recv() for w in workers[1:]]
    finally:
        for w in workers:
            await w.stop()
        server.stop()
    streams = [s for r in reports for s in r["streams"]]
    latencies = [x for r in reports for x in r["latencies"]]
    packets = sum(s["packets"] for s in streams)
    expected = sum(s["expected"] for s in streams)
    elapsed = t1 - t0
    return {
        "mode": mode,
        "viewers": viewers,
        "cpu": 100 * (cpu1 - cpu0) / elapsed,
        "cpu_per_viewer": 100 * (cpu1 - cpu0) / elapsed / viewers,
        "pps": packets / elapsed,
        "mbps": sum(s["bytes"] for s in streams) * 8 / elapsed / 1e6,
        "loss": 100 * (expected - packets) / expected if expected else 100.0,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "fanout": forwarding["fanout_ms"],
        "us_per_packet": (cpu1 - cpu0) / packets * 1e6 if packets else None,
    }


async def worker(url: str, role: str, users: list[str]) -> None:
    from miscord_client.client import VoiceClient
    from miscord_client.load.media import Counter, StampedAudio, StampedScreen
    from signaling import auth

    counters, clients = [], []
    for user in users:
        counter = Counter()
        client = VoiceClient(
            url, auth.issue(SECRET, user, ["*"]), ["127.0.0.1"], raw_sink=counter
        )
        await client.join("screen")
        if role == "share":
            await client.publish(
                microphone=StampedAudio(), screen=StampedScreen(BITRATE)
            )
        counters.append(counter)
        clients.append(client)
    if role == "share":
        emit({"sharing": True})
        await asyncio.Event().wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        any(k[1] == "screen" and s.packets for k, s in c.streams.items())
        for c in counters
    ):
        await asyncio.sleep(0.1)
    emit({"ready": True})
    await serve_counts(counters, source="screen")
    for client in clients:
        await client.close()


async def main(args: argparse.Namespace) -> None:
    rows = []
    for mode in args.modes.split(","):
        for viewers in (int(v) for v in args.viewers.split(",")):
            row = await run(viewers, args.seconds, mode)
            rows.append(row)
            print(row, flush=True)
    table = [
        "| path | viewers | server CPU % | CPU % per viewer | µs per packet | forwarded pkt/s | Mbit/s out | loss % | latency p50 / p99 ms | fan-out p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        latency = (
            f"{fmt(r['p50'] * 1000, 2)} / {fmt(r['p99'] * 1000, 2)}"
            if r["p50"] is not None
            else "—"
        )
        fan = f"{r['fanout']['p50']} / {r['fanout']['p99']}" if r["fanout"] else "—"
        table.append(
            f"| {r['mode']} | {r['viewers']} | {fmt(r['cpu'])} | {fmt(r['cpu_per_viewer'], 2)} | "
            f"{fmt(r['us_per_packet'])} | {fmt(r['pps'], 0)} | {fmt(r['mbps'], 2)} | "
            f"{fmt(r['loss'], 2)} | {latency} | {fan} |"
        )
    body = (
        "## Screen share fan-out (`benchmarks/screen_share.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench screen_share --modes {args.modes} "
        f"--viewers {args.viewers} --seconds {args.seconds}`.\n\n"
        f"One sharer sends a {BITRATE / 1e6:.0f} Mbit/s, 15 fps VP8-framed screen "
        "(1080p-sized frames, synthetic, a keyframe every 2 s) and 50 packets/s of "
        "audio; V viewers in 2 client processes count the screen's RTP packets. Latency: "
        "the sharer's stamp on a frame's first packet to its arrival at a viewer's RTP "
        "hook (both clients' event loops included). CPU: the server process alone.\n\n"
        + "\n".join(table)
        + "\n"
    )
    publish(args, "screen_share", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], sys.argv[3], sys.argv[4].split(",")))
    else:
        parser = argparse.ArgumentParser(description=__doc__)
        parser.add_argument("--modes", default="fast")
        parser.add_argument("--viewers", default="1,4,8,16")
        parser.add_argument("--seconds", type=float, default=10.0)
        parser.add_argument("--no-write", dest="write", action="store_false")
        asyncio.run(main(parser.parse_args()))
