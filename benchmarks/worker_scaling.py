"""Capacity with worker processes: forwarded audio streams held at under
0.5 % loss by ``serve --workers 1`` and ``--workers 2``, side by side in one
run, and the server's µs of CPU per forwarded packet.

Channels of ``--size`` participants (everyone publishes 20 ms packets and
receives everyone else) are added ``--step`` at a time to one server until a
step's loss reaches 0.5 % (or ``--max`` channels); each step measures
``--seconds`` after a settling pause. The clients are replay clients
(``benchmarks/replay.py``: real sessions, pre-protected packets), one
process per channel; what they receive is counted and dropped by an
nftables rule on their ports (RTP only: STUN and DTLS pass), so receiving
costs them nothing. Their CPU is reported beside the server's (front and
workers) so a run bound by its clients shows as such. Needs ``nft``
(Debian: nftables) and root, as ``scripts/bench`` runs it in a network
namespace of its own.

    scripts/bench worker_scaling --size 10 --step 2 --max 24 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

from benchmarks.common import (
    SECRET,
    ServerProcess,
    Worker,
    emit,
    fmt,
    machine,
    publish,
)

MAX_LOSS = 0.5  # percent
SUPPLY = 480.0  # seconds of packets each replay publisher holds
TABLE = "miscord_bench"
#: RTP to the subscribers' ports (version 2, not an RTCP packet type):
#: counted, then dropped before any socket
RULES = f"""
table inet {TABLE} {{
    set subscribers {{ type inet_service; }}
    counter rtp {{ }}
    chain input {{
        type filter hook input priority 0;
        udp dport @subscribers @th,64,2 2 @th,72,8 != 192-223 counter name rtp drop
    }}
}}
"""


def nft(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["nft", *args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def received_packets() -> int:
    listed = json.loads(nft("-j", "list", "counter", "inet", TABLE, "rtp"))
    return int(
        next(i["counter"]["packets"] for i in listed["nftables"] if "counter" in i)
    )


@dataclass
class Step:
    workers: int
    channels: int
    size: int
    seconds: float
    received: int
    expected: int
    server_cpu: float  # seconds, front and workers
    client_cpu: float  # seconds, every client process

    @property
    def forwarded_streams(self) -> int:
        return self.channels * self.size * (self.size - 1)

    @property
    def loss(self) -> float:
        if not self.expected:
            return 100.0
        return 100 * max(0, self.expected - self.received) / self.expected

    @property
    def ok(self) -> bool:
        return self.loss < MAX_LOSS

    @property
    def us_per_packet(self) -> float | None:
        return 1e6 * self.server_cpu / self.received if self.received else None


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def ramp(workers: int, args: argparse.Namespace) -> list[Step]:
    server = await ServerProcess.start(
        "--workers",
        str(workers),
        "--max-participants",
        "200",
        "--max-sockets-per-address",
        "10000",
        "--log-level",
        "error",
    )
    nft("-f", "-", stdin=RULES)
    clients: list[Worker] = []
    steps: list[Step] = []
    try:
        while len(clients) < args.max:
            added = [
                await Worker.start(
                    __spec__.name, server.url, f"c{len(clients) + i}", str(args.size)
                )
                for i in range(args.step)
            ]
            clients += added
            ready = [await client.recv(timeout=300) for client in added]
            if not all(r.get("ready") for r in ready):
                print(f"  clients not ready: {ready}", flush=True)
                break
            ports = ", ".join(str(p) for r in ready for p in r["ports"])
            nft("add", "element", "inet", TABLE, "subscribers", f"{{ {ports} }}")
            await asyncio.sleep(args.settle)
            step = await measure(server, clients, workers, args)
            steps.append(step)
            print(
                f"  workers {workers}: {step.channels} channels, "
                f"{step.forwarded_streams} streams: loss {fmt(step.loss, 2)} %, "
                f"server {fmt(step.server_cpu / step.seconds, 2)} cores, "
                f"clients {fmt(step.client_cpu / step.seconds, 2)} cores, "
                f"{fmt(step.us_per_packet)} µs/pkt",
                flush=True,
            )
            if not step.ok:
                break
    finally:
        for client in clients:
            await client.stop()
        server.stop()
        nft("delete", "table", "inet", TABLE)
    return steps


async def sent(clients: list[Worker]) -> int:
    """Packets every subscriber should have been sent so far: each packet
    published goes to the channel's other participants."""
    for client in clients:
        await client.send({"cmd": "sent"})
    return sum([(await client.recv())["expected"] for client in clients])


async def measure(
    server: ServerProcess, clients: list[Worker], workers: int, args: argparse.Namespace
) -> Step:
    own = server.ps
    processes = [own, *own.children(recursive=True)]
    client_processes = [psutil.Process(c.proc.pid) for c in clients]
    expected0, received0 = await sent(clients), received_packets()
    server0, clients0 = cpu_seconds(processes), cpu_seconds(client_processes)
    t0 = time.monotonic()
    await asyncio.sleep(args.seconds)
    server1, clients1 = cpu_seconds(processes), cpu_seconds(client_processes)
    t1 = time.monotonic()
    # what was sent in the window, counted when it has had time to arrive
    expected1 = await sent(clients)
    await asyncio.sleep(0.2)
    received1 = received_packets()
    return Step(
        workers=workers,
        channels=len(clients),
        size=args.size,
        seconds=t1 - t0,
        received=received1 - received0,
        expected=expected1 - expected0,
        server_cpu=server1 - server0,
        client_cpu=clients1 - clients0,
    )


# --- client process -----------------------------------------------------------------


async def client_process(url: str, channel: str, size: int) -> None:
    from benchmarks.replay import Silent, local_port, publisher, send_forever
    from miscord_client.client import VoiceClient
    from signaling import auth

    voices: list[VoiceClient] = []
    for i in range(size):
        user = f"{channel}-u{i}"
        client = VoiceClient(url, auth.issue(SECRET, user, ["*"]), ["127.0.0.1"])
        voices.append(client)
        await client.join(channel)
        await client.publish(microphone=Silent())
    deadline = time.monotonic() + 120
    while not all(
        pc is not None and pc.connectionState == "connected"
        for client in voices
        for pc in (client.publish_pc, client.subscribe_pc)
    ):
        if time.monotonic() > deadline:
            emit({"ready": False, "why": "peer connections did not connect"})
            return
        await asyncio.sleep(0.1)
    publishers = [publisher(c.publish_pc, SUPPLY) for c in voices if c.publish_pc]
    sending = asyncio.create_task(send_forever(publishers))
    emit(
        {
            "ready": True,
            "ports": [local_port(c.subscribe_pc) for c in voices if c.subscribe_pc],
        }
    )
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while await reader.readline():  # "sent"
        emit({"expected": sum(p.sent for p in publishers) * (size - 1)})
    sending.cancel()
    for client in voices:
        await client.close()


# --- report -------------------------------------------------------------------------


def capacity(steps: list[Step]) -> Step | None:
    passed = [s for s in steps if s.ok]
    return passed[-1] if passed else None


def table(runs: dict[int, list[Step]]) -> str:
    lines = [
        "| workers | channels | forwarded streams | loss % | server cores | "
        "client cores | µs/forwarded pkt |",
        "|---|---|---|---|---|---|---|",
    ]
    for workers, steps in runs.items():
        for s in steps:
            lines.append(
                f"| {workers} | {s.channels} | {s.forwarded_streams} | "
                f"{fmt(s.loss, 2)} | {fmt(s.server_cpu / s.seconds, 2)} | "
                f"{fmt(s.client_cpu / s.seconds, 2)} | {fmt(s.us_per_packet)} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    runs = {}
    for workers in (1, 2):
        print(f"--workers {workers}", flush=True)
        runs[workers] = await ramp(workers, args)
    one, two = capacity(runs[1]), capacity(runs[2])
    ratio = (
        two.forwarded_streams / one.forwarded_streams
        if one is not None and two
        else None
    )
    summary = (
        f"Capacity at < {MAX_LOSS} % loss: 1 worker "
        f"{one.forwarded_streams if one else 0} forwarded streams, 2 workers "
        f"{two.forwarded_streams if two else 0}: ratio {fmt(ratio, 2)}."
    )
    print(summary)
    body = (
        "## Worker processes (`benchmarks/worker_scaling.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench worker_scaling --size "
        f"{args.size} --step {args.step} --max {args.max} --seconds {args.seconds}`.\n\n"
        f"Channels of {args.size}, everyone publishing 20 ms packets and receiving "
        f"everyone else, added {args.step} at a time to one server with 1, then 2 "
        "worker processes, until a step's loss reached 0.5 %. Replay clients "
        "(real sessions, pre-protected packets; what they receive counted and "
        "dropped by an nftables rule), a process per channel; server cores are "
        "the front and its workers, client "
        "cores every client process, both measured over the same window. On this "
        "2-core machine the clients share the cores with the workers, so 2 workers "
        "cannot show twice 1: compare the µs per forwarded packet, which says whether "
        "a worker's cost per packet changes when two run.\n\n"
        f"{summary}\n\n" + table(runs) + "\n"
    )
    publish(args, "worker_scaling", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(client_process(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        parser = argparse.ArgumentParser(description=__doc__)
        parser.add_argument("--size", type=int, default=10)
        parser.add_argument("--step", type=int, default=4)
        parser.add_argument("--max", type=int, default=24)
        parser.add_argument("--seconds", type=float, default=5.0)
        parser.add_argument("--settle", type=float, default=2.0)
        parser.add_argument("--no-write", dest="write", action="store_false")
        asyncio.run(main(parser.parse_args()))
