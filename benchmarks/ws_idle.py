"""Idle `events` connections: how many one server process holds, the memory each
costs, and how many presence messages per second it delivers to them.

Client processes open K WebSockets that join one channel as `events`; a voice
participant then joins and leaves repeatedly, so every cycle delivers
`participant_joined` and `participant_left` to all K watchers.

    scripts/bench ws_idle --counts 1000,2000,5000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from benchmarks.common import (
    LOOPBACK_CROWD,
    SECRET,
    ServerProcess,
    Worker,
    emit,
    fmt,
    machine,
    publish,
)

PER_WORKER = 2500
CYCLES = 20


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(count: int) -> dict:
    server = await ServerProcess.start("--heartbeat-interval", "30", *LOOPBACK_CROWD)
    workers: list[Worker] = []
    try:
        await asyncio.sleep(1)
        idle_rss = server.rss()
        left = count
        while left > 0:
            n = min(PER_WORKER, left)
            workers.append(
                await Worker.start(__spec__.name, server.url, str(n), str(len(workers)))
            )
            left -= n
        opened = sum([(await w.recv(timeout=300))["open"] for w in workers])
        await asyncio.sleep(2)
        rss = server.rss()
        stats = await server.get("/api/debug/websocket-stats")
        live = stats["by_kind"].get("events", 0)
        # presence broadcasts: a voice participant joins and leaves CYCLES times
        from signaling import auth
        from tests.wsclient import Ws

        for w in workers:
            await w.send({"cmd": "count"})
        for w in workers:
            await w.recv()
        token = auth.issue(SECRET, "mover", ["*"])
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        for _ in range(CYCLES):
            ws = await Ws.open(server.url)
            await ws.join(token, channel="lobby")
            await ws.send({"type": "leave"})
            await ws.closed()
            await ws.close()
        for w in workers:
            await w.send({"cmd": "wait", "messages": 2 * CYCLES})
        delivered = sum([(await w.recv(timeout=300))["received"] for w in workers])
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
    finally:
        for w in workers:
            await w.stop()
        server.stop()
    return {
        "count": count,
        "opened": opened,
        "live": live,
        "rss_mib": rss / 2**20,
        "kib_per_conn": (rss - idle_rss) / max(live, 1) / 1024,
        "delivered": delivered,
        "seconds": t1 - t0,
        "per_second": delivered / (t1 - t0),
        "cpu": 100 * (cpu1 - cpu0) / (t1 - t0),
    }


async def worker(url: str, n: int, index: int) -> None:
    import aiohttp

    from signaling import auth

    raise_fd_limit()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    counts = [0] * n
    for i in range(n):
        ws = await session.ws_connect(url + "/ws", heartbeat=None)
        token = auth.issue(SECRET, f"w{index}-{i}", ["*"])
        await ws.send_str(
            json.dumps(
                {"type": "join", "token": token, "channel": "lobby", "kind": "events"}
            )
        )
        await ws.receive(timeout=30)
        sockets.append(ws)

    async def read(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and '"participant_' in msg.data:
                counts[i] += 1

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    emit({"open": len(sockets)})
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "count":
            counts[:] = [0] * n
            emit({"ok": True})
        elif command["cmd"] == "wait":
            deadline = time.monotonic() + 120
            while min(counts) < command["messages"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            emit({"received": sum(counts)})
    for task in readers:
        task.cancel()
    await session.close()


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        result = await run(count)
        rows.append(result)
        print(result, flush=True)
    table = [
        "| connections asked | held (server) | server RSS MiB | KiB per connection | presence messages delivered | per second | server CPU % while broadcasting |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['count']} | {r['live']} | {fmt(r['rss_mib'])} | {fmt(r['kib_per_conn'])} | "
            f"{r['delivered']} | {fmt(r['per_second'], 0)} | {fmt(r['cpu'])} |"
        )
    body = (
        "## Idle events connections (`benchmarks/ws_idle.py`)\n\n"
        f"Machine: {machine()}. Command: `scripts/bench ws_idle --counts {args.counts}`.\n\n"
        "K WebSockets join one channel as `events` from client processes; then a voice "
        f"participant joins and leaves {CYCLES} times, each cycle delivering "
        "`participant_joined` and `participant_left` to all K. Memory is the server "
        "process's RSS growth over an idle server, divided by the connections held; "
        "throughput is deliveries per second until every watcher has all messages.\n\n"
        + "\n".join(table)
        + "\n"
    )
    publish(args, "ws_idle", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        parser = argparse.ArgumentParser(description=__doc__)
        parser.add_argument("--counts", default="1000,2000,5000,10000")
        parser.add_argument("--no-write", dest="write", action="store_false")
        asyncio.run(main(parser.parse_args()))
