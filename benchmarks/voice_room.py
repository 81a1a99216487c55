"""Voice room: N participants, everyone publishing and hearing everyone else.

For each forwarding path (fast fan-out, aiortc track senders, and the MediaRelay
decode/re-encode baseline) and each room size N, it measures the server
process alone: CPU per forwarded stream-second and per packet, forwarded
packets/s, loss per subscription, latency (client stamp to client receipt, and
the server's own fan-out time and event-loop lag) and RSS per participant.
All paths run in one invocation, so their ratios compare like with like.

    scripts/bench voice_room --sizes 4,8,12,16,20 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    ROOT,
    SECRET,
    ServerProcess,
    Worker,
    checkout,
    emit,
    fmt,
    machine,
    percentile,
    publish,
    serve_counts,
    write_section,
)

WORKERS = 2
PACKET_RATE = 50  # Opus, 20 ms


@dataclass
class Result:
    mode: str
    n: int
    seconds: float
    cpu: float
    system: float  # of ``cpu``, in the kernel
    packets: int
    lost: int
    expected: int
    worst_loss: float
    latencies: list[float]
    fanout: dict | None
    loop_lag: dict | None
    rss_per_participant: float
    complete: bool
    #: the local candidate type of every client connection's selected pair
    paths: tuple[str, ...] = ()

    @property
    def streams(self) -> int:
        return self.n * (self.n - 1)

    @property
    def ms_per_stream_second(self) -> float:
        return self.cpu / (self.streams * self.seconds) * 1000

    @property
    def us_per_packet(self) -> float | None:
        return self.cpu / self.packets * 1e6 if self.packets else None

    @property
    def user_us_per_packet(self) -> float | None:
        return (self.cpu - self.system) / self.packets * 1e6 if self.packets else None

    @property
    def loss(self) -> float:
        return 100 * self.lost / self.expected if self.expected else 100.0


async def run_room(
    mode: str,
    n: int,
    seconds: float,
    root: Path = ROOT,
    server_args: Sequence[str] = (),
    relay: bool = False,
) -> Result:
    """One room of ``n``; ``relay``: the clients reach the server through the
    TURN server that ``server_args`` name, and only through it."""
    server = await ServerProcess.start(
        "--forwarding", mode, "--max-participants", "200", *server_args, root=root
    )
    workers: list[Worker] = []
    try:
        idle_rss = server.rss()
        users = [f"u{i}" for i in range(n)]
        for w in range(WORKERS):
            mine = users[w::WORKERS]
            if mine:
                workers.append(
                    await Worker.start(
                        __spec__.name,
                        server.url,
                        ",".join(mine),
                        str(n),
                        mode,
                        "relay" if relay else "direct",
                    )
                )
        ready = [await w.recv(timeout=90) for w in workers]
        complete = all(r.get("ready") for r in ready)
        await asyncio.sleep(2)  # let the jitter of joining settle
        for w in workers:
            await w.send({"cmd": "start"})
        for w in workers:
            await w.recv()
        cpu0, t0 = server.cpu_split(), time.monotonic()
        await server.get("/api/debug/forwarding?reset=1")
        await asyncio.sleep(seconds)
        cpu1, t1 = server.cpu_split(), time.monotonic()
        after = await server.get("/api/debug/forwarding")
        rss = server.rss()
        for w in workers:
            await w.send({"cmd": "stop"})
        reports = [await w.recv() for w in workers]
    finally:
        for w in workers:
            await w.stop()
        server.stop()
    streams = [s for r in reports for s in r["streams"]]
    latencies = [x for r in reports for x in r["latencies"]]
    return Result(
        mode=mode,
        n=n,
        seconds=t1 - t0,
        cpu=sum(cpu1) - sum(cpu0),
        system=cpu1[1] - cpu0[1],
        packets=sum(s["packets"] for s in streams),
        lost=sum(s["lost"] for s in streams),
        expected=sum(s["expected"] for s in streams),
        worst_loss=max(
            (100 * s["lost"] / s["expected"] for s in streams if s["expected"]),
            default=100,
        ),
        latencies=latencies,
        fanout=after["fanout_ms"],
        loop_lag=after["loop_lag_ms"],
        rss_per_participant=(rss - idle_rss) / n / 2**20,
        complete=complete and len(streams) == n * (n - 1),
        paths=tuple(path for r in ready for path in r.get("paths", [])),
    )


# --- worker process ---------------------------------------------------------------


async def worker(
    url: str, users: list[str], n: int, forwarding: str, relay: bool
) -> None:
    from miscord_client import ice
    from miscord_client.client import VoiceClient
    from miscord_client.load.media import Counter, StampedAudio, encode_tone
    from signaling import auth

    opus = encode_tone() if forwarding == "relay" else None
    counters: list[Counter] = []
    clients: list[VoiceClient] = []
    for user in users:
        counter = Counter()
        client = VoiceClient(
            url,
            auth.issue(SECRET, user, ["*"]),
            ["127.0.0.1"],
            raw_sink=counter,
            relay=relay,
        )
        clients.append(client)
        try:
            await client.join("bench")
            await client.publish(microphone=StampedAudio(opus_frames=opus))
        except TimeoutError:  # an overloaded path: measure who got in
            continue
        counters.append(counter)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(len(c.streams) >= n - 1 for c in counters):
            break
        await asyncio.sleep(0.2)
    emit(
        {
            "ready": len(counters) == len(users)
            and all(len(c.streams) >= n - 1 for c in counters),
            "paths": [
                connection._nominated[1].local_candidate.type
                for client in clients
                for pc in (client.publish_pc, client.subscribe_pc)
                if pc is not None
                for connection in ice.connections(pc)
                if 1 in connection._nominated
            ],
        }
    )
    await serve_counts(counters)
    for client in clients:
        await client.close()


# --- report -------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    fast = {r.n: r for r in results if r.mode == "fast"}
    lines = [
        "| path | N | streams | server CPU % | CPU ms per stream-s | µs per packet | "
        "of it user µs | × fast (per packet) | delivered % | loss % (worst) | "
        "e2e latency p50/p99 ms | fan-out p50/p99 ms | loop lag p99 ms | "
        "RSS MiB/participant |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = fast.get(r.n)
        ratio = (
            r.us_per_packet / base.us_per_packet
            if base and r.us_per_packet and base.us_per_packet
            else None
        )
        lat = (
            f"{fmt(percentile(r.latencies, 0.5) * 1000, 2)} / "
            f"{fmt(percentile(r.latencies, 0.99) * 1000, 2)}"
            if r.latencies
            else "—"
        )
        fan = f"{r.fanout['p50']} / {r.fanout['p99']}" if r.fanout else "—"
        lag = str(r.loop_lag["p99"]) if r.loop_lag else "—"
        delivered = 100 * r.packets / (r.streams * PACKET_RATE * r.seconds)
        lines.append(
            f"| {r.mode} | {r.n} | {r.streams} | {fmt(100 * r.cpu / r.seconds)} | "
            f"{fmt(r.ms_per_stream_second, 2)} | {fmt(r.us_per_packet)} | "
            f"{fmt(r.user_us_per_packet)} | {fmt(ratio, 2)} | "
            f"{fmt(min(delivered, 100.0))} | "
            f"{fmt(r.loss, 2)} ({fmt(r.worst_loss, 2)}) | "
            f"{lat} | {fan} | {lag} | {fmt(r.rss_per_participant, 2)} |"
        )
    return "\n".join(lines)


async def against(args: argparse.Namespace) -> None:
    """This checkout's fast path and ``--against``'s, side by side: rounds
    alternate between the two servers (same clients, same machine, same
    minutes), so the ratio is what the change costs, not the machine's mood."""
    other = checkout(args.against)
    runs: dict[str, list[Result]] = {args.against: [], "this": []}
    pair = [(args.against, other), ("this", ROOT)]
    for n_round in range(args.rounds):
        # ABBA: which server goes first alternates, so a drift within a round
        # (the machine warming, the other tenant) falls on both alike
        for name, root in pair if n_round % 2 == 0 else pair[::-1]:
            for n in (int(x) for x in args.sizes.split(",")):
                result = await run_room("fast", n, args.seconds, root)
                runs[name].append(result)
                print(
                    f"{name:8} N={n:2}: {fmt(result.us_per_packet)} µs/pkt", flush=True
                )
    lines = [
        "| N | revision | µs per packet, each round | median | loss % | "
        "this / that (median of rounds) |",
        "|---|---|---|---|---|---|",
    ]
    for n in (int(x) for x in args.sizes.split(",")):
        mine = [r for r in runs["this"] if r.n == n]
        theirs = [r for r in runs[args.against] if r.n == n]
        ratios = sorted(
            a.us_per_packet / b.us_per_packet
            for a, b in zip(mine, theirs, strict=True)
            if a.us_per_packet and b.us_per_packet
        )
        for name, rs in ((args.against, theirs), ("this", mine)):
            values = [r.us_per_packet or 0.0 for r in rs]
            lines.append(
                f"| {n} | {name} | {', '.join(fmt(v) for v in values)} | "
                f"{fmt(statistics.median(values))} | "
                f"{fmt(max(r.loss for r in rs), 2)} | "
                + (fmt(statistics.median(ratios), 3) if name == "this" else "")
                + " |"
            )
    body = (
        f"## Fast path against {args.against} ({args.section})\n\n"
        f"Machine: {machine()}. Command: `scripts/bench voice_room --against "
        f"{args.against} --sizes {args.sizes} --rounds {args.rounds} --seconds "
        f"{args.seconds} --section {args.section}`: the fast path of this checkout and of {args.against}, "
        "rounds alternating between the two servers in one run (same clients; "
        "which goes first alternates too), "
        "server CPU per forwarded packet.\n\n" + "\n".join(lines) + "\n"
    )
    print(body)
    if args.write:
        write_section(f"voice_room_against_{args.section}", body)


async def main(args: argparse.Namespace) -> None:
    if args.against:
        await against(args)
        return
    results = []
    for mode in args.modes.split(","):
        sizes = {"relay": args.relay_sizes, "track": args.track_sizes}.get(mode)
        sizes = sizes or args.sizes
        for n in (int(x) for x in sizes.split(",")):
            result = await run_room(mode, n, args.seconds)
            results.append(result)
            print(
                f"{mode:5} N={n:2}: {fmt(result.ms_per_stream_second, 2)} ms CPU/stream-s, "
                f"{fmt(result.us_per_packet)} µs/pkt, loss {fmt(result.loss, 2)} %",
                flush=True,
            )
    body = (
        "## Voice room (`benchmarks/voice_room.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench voice_room --modes {args.modes} "
        f"--sizes {args.sizes} --relay-sizes {args.relay_sizes} "
        + (f"--track-sizes {args.track_sizes} " if args.track_sizes else "")
        + f"--seconds {args.seconds}`.\n\n"
        "N participants in one channel, each publishing 20 ms Opus-sized packets "
        "(stamped, never decoded; the relay baseline gets real Opus) and receiving all "
        "others, clients in 2 other processes. CPU is the server process alone over "
        f"{args.seconds} s after warm-up; a stream-second is one subscription for one "
        "second. e2e latency: publisher's stamp to the receiving client's RTP hook (both "
        "clients' event loops included: an upper bound of what the server adds); fan-out: "
        "the server's time from a received packet to the last subscriber's sendto; loop "
        "lag: how late the server's event loop ran a timer (queueing). Delivered: "
        "packets received of those N(N-1) streams should carry; a saturated path "
        "drops before numbering packets, so its loss by sequence gaps stays 0 while "
        "delivery falls. *Of it user*: the server's own code (Python, libsrtp); the "
        "rest is the kernel, and on loopback a `sendto` also runs the receiving "
        "client's side of the network stack and wakes that process, in the server's "
        "time (about 40 µs when the receiver sleeps, 5 µs when it is awake: "
        "`benchmarks/udp_wakeup.py`).\n\n" + table(results) + "\n"
    )
    publish(args, "voice_room", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, users, n, forwarding, path = (
            sys.argv[2],
            sys.argv[3].split(","),
            int(sys.argv[4]),
            sys.argv[5],
            sys.argv[6],
        )
        asyncio.run(worker(url, users, n, forwarding, path == "relay"))
    else:
        parser = argparse.ArgumentParser(description=__doc__)
        parser.add_argument("--modes", default="fast,track,relay")
        parser.add_argument("--sizes", default="4,8,12,16,20")
        parser.add_argument("--relay-sizes", default="2,4,6,8")
        parser.add_argument("--track-sizes", help="(default: --sizes)")
        parser.add_argument("--seconds", type=float, default=10.0)
        parser.add_argument("--no-write", dest="write", action="store_false")
        parser.add_argument(
            "--against", help="compare the fast path with this git revision's"
        )
        parser.add_argument("--rounds", type=int, default=4)
        parser.add_argument(
            "--section",
            default="change",
            help="the docs section to write (with --against)",
        )
        asyncio.run(main(parser.parse_args()))
