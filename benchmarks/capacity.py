"""Capacity: the largest voice channel, and the most 4-person channels, that one
server process holds on this machine within the bounds: audio loss under 0.5 %
and latency p99 under 20 ms, as measured by ``miscord-sfu loadtest``.

Everyone in a channel publishes stamped audio and hears everyone else. Sizes
double from ``--start`` until a trial fails (or ``--max``), then bisect between
the last pass and the first failure; every trial gets a fresh server process.
The clients run on the same machine: a trial whose client processes were
saturated measured the clients, and the table says so.

    scripts/bench capacity --seconds 10
    scripts/bench capacity --only channel --start 4 --max 8 --seconds 3 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.common import (
    LOOPBACK_CROWD,
    SECRET,
    ServerProcess,
    fmt,
    machine,
    publish,
)
from miscord_client.load.coordinator import run
from miscord_client.load.report import LoadResult
from miscord_client.load.scenario import LoadError, LoadOptions

MAX_LOSS = 0.5  # percent
MAX_P99_MS = 20.0
GROUP = 4  # participants per channel in the many-channels search
#: a client process this busy (percent of one core) limits what is measured
CLIENT_SATURATED = 90.0


@dataclass
class Trial:
    search: str
    channels: int
    per_channel: int
    result: LoadResult | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def participants(self) -> int:
        return self.channels * self.per_channel

    def client_bound(self, processes: int) -> bool:
        cpu = self.result.clients_cpu_percent if self.result else None
        return cpu is not None and cpu / processes > CLIENT_SATURATED

    def row(self, processes: int) -> str:
        r = self.result
        if r is None:
            return (
                f"| {self.search} | {self.channels} × {self.per_channel} | "
                f"{self.participants} | — | — | — | — | — | — | run failed: "
                f"{self.error} |"
            )
        verdict = "pass" if self.ok else "fail: " + "; ".join(r.failures)
        if self.client_bound(processes):
            verdict += " (clients saturated)"
        streams = len(r.audio())
        return (
            f"| {self.search} | {self.channels} × {self.per_channel} | "
            f"{self.participants} | {streams} | "
            f"{fmt(r.loss, 3)} | {fmt(r.latency(0.99), 2)} | "
            f"{fmt(r.join_ms(0.99), 0)} | {fmt(r.server.cpu_percent, 0)} / "
            f"{fmt(r.server.peak_rss_mib, 0)} | {fmt(r.clients_cpu_percent, 0)} | "
            f"{verdict} |"
        )


async def trial(
    search: str, channels: int, per_channel: int, args: argparse.Namespace
) -> Trial:
    server = await ServerProcess.start(
        "--max-participants",
        str(max(99, per_channel)),
        "--max-channels",
        str(max(1000, channels)),
        *LOOPBACK_CROWD,
    )
    try:
        result = await run(
            LoadOptions(
                server.url,
                SECRET,
                processes=args.processes,
                channels=channels,
                per_channel=per_channel,
                duration=args.seconds,
                warmup=args.warmup,
                max_loss=MAX_LOSS,
                max_p99_ms=MAX_P99_MS,
                server_pid=server.proc.pid,
                join_concurrency=4,
            ),
            progress=(lambda line: print("   ", line, flush=True))
            if args.verbose
            else None,
        )
        done = Trial(search, channels, per_channel, result)
    except LoadError as exc:
        done = Trial(search, channels, per_channel, None, str(exc))
    finally:
        server.stop()
    print(
        f"{search}: {channels} × {per_channel}: {done.row(args.processes)}", flush=True
    )
    return done


async def largest(
    attempt: Callable[[int], Awaitable[Trial]], start: int, limit: int
) -> tuple[int | None, list[Trial]]:
    """The largest size that passes: double from ``start``, then bisect (None if
    even ``start`` fails)."""
    trials: list[Trial] = []
    passed, failed = None, None
    size = start
    while size <= limit:
        trials.append(done := await attempt(size))
        if not done.ok:
            failed = size
            break
        passed = size
        size = min(size * 2, limit) if size < limit else limit + 1
    if passed is None:
        return None, trials
    while failed is not None and failed - passed > 1:
        middle = (passed + failed) // 2
        trials.append(done := await attempt(middle))
        if done.ok:
            passed = middle
        else:
            failed = middle
    return passed, trials


async def main(args: argparse.Namespace) -> None:
    found: dict[str, int | None] = {}
    trials: list[Trial] = []
    if args.only in (None, "channel"):
        found["channel"], done = await largest(
            lambda n: trial("one channel", 1, n, args), args.start, args.max
        )
        trials += done
    if args.only in (None, "channels"):
        found["channels"], done = await largest(
            lambda c: trial(f"{GROUP}-person channels", c, GROUP, args),
            args.start_channels,
            args.max_channels,
        )
        trials += done

    def size(key: str, limit: int) -> str:
        value = found[key]
        if value is None:
            return "none (the smallest size failed)"
        return f"{value} (the search's limit)" if value >= limit else str(value)

    lines = []
    if "channel" in found:
        lines.append(
            f"- **Largest voice channel: N = {size('channel', args.max)}** "
            "participants, everyone publishing and hearing everyone else."
        )
    if "channels" in found:
        lines.append(
            f"- **Most concurrent {GROUP}-person channels: "
            f"{size('channels', args.max_channels)}**, everyone publishing."
        )
    body = (
        "## Capacity (`benchmarks/capacity.py`)\n\n"
        f"Machine: {machine()}. Command: "
        f"`{' '.join(['scripts/bench capacity', *sys.argv[1:]])}`.\n\n"
        f"Bounds: audio loss < {MAX_LOSS} % over every subscription and forwarding "
        f"latency p99 < {MAX_P99_MS:.0f} ms (publisher's stamp to the receiving "
        "client; both clients' event loops included), measured by `miscord-sfu "
        f"loadtest` over {args.seconds} s after a {args.warmup} s warm-up, the "
        f"server alone in its process and the clients in {args.processes} others "
        "on the same machine. Sizes double until a trial fails, then bisect; one "
        "trial per size.\n\n"
        + "\n".join(lines)
        + "\n\n| search | channels × size | participants | audio streams | "
        "loss % | p99 ms | join p99 ms | server CPU % / peak RSS MiB | "
        "clients CPU % | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(t.row(args.processes) for t in trials)
        + "\n"
    )
    publish(args, "capacity", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=("channel", "channels"))
    parser.add_argument("--start", type=int, default=4, help="first channel size")
    parser.add_argument("--max", type=int, default=256, help="largest channel size")
    parser.add_argument("--start-channels", type=int, default=1)
    parser.add_argument("--max-channels", type=int, default=256)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--verbose", action="store_true", help="progress lines")
    parser.add_argument("--no-write", dest="write", action="store_false")
    asyncio.run(main(parser.parse_args()))
