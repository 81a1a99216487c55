"""``miscord-sfu loadtest``: the load tool's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from .coordinator import run
from .scenario import LoadError, LoadOptions

# --- command line -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("url", help="the server, e.g. http://127.0.0.1:8080")
    add(
        "--secret",
        help="server secret to sign tokens [SFU_SECRET]; without it, "
        "the server's development login is used",
    )
    add("--support-token", help="a support token for the debug routes")
    add("--processes", type=int, default=2, help="client processes (default 2)")
    add("--channels", type=int, default=1, help="voice channels (default 1)")
    add("--per-channel", type=int, default=4, help="participants per channel")
    add("--publishers", type=int, help="audio publishers per channel (default all)")
    add("--screens", type=int, default=0, help="screen sharers per channel")
    add("--screen-kbps", type=int, default=1500, help="bitrate of each screen")
    add("--duration", type=float, default=10.0, help="seconds measured")
    add("--warmup", type=float, default=2.0, help="seconds before measuring")
    add(
        "--ready-timeout",
        type=float,
        help="seconds to wait until everyone receives every stream "
        "(default 30 + 0.2 per participant)",
    )
    add("--join-timeout", type=float, default=20.0, help="seconds per join")
    add("--join-concurrency", type=int, default=4, help="joins at once per process")
    add("--max-loss", type=float, default=0.5, help="audio loss bound, percent")
    add("--max-p99-ms", type=float, default=20.0, help="latency p99 bound, ms")
    add(
        "--server-pid",
        type=int,
        help="server process for CPU/RSS (default: found by port on loopback)",
    )
    add(
        "--ice-host",
        action="append",
        dest="ice_hosts",
        help="address clients gather ICE candidates on (default 127.0.0.1)",
    )
    add("--json", dest="json_path", help="also write the result as JSON here")
    add("--quiet", action="store_true", help="no progress lines")


def options_from(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(
        url=args.url,
        secret=args.secret or os.environ.get("SFU_SECRET", ""),
        support_token=args.support_token or "",
        processes=args.processes,
        channels=args.channels,
        per_channel=args.per_channel,
        publishers=args.publishers,
        screens=args.screens,
        screen_kbps=args.screen_kbps,
        duration=args.duration,
        warmup=args.warmup,
        ready_timeout=args.ready_timeout,
        join_timeout=args.join_timeout,
        join_concurrency=args.join_concurrency,
        max_loss=args.max_loss,
        max_p99_ms=args.max_p99_ms,
        server_pid=args.server_pid,
        ice_hosts=args.ice_hosts or ["127.0.0.1"],
    )


def main(args: argparse.Namespace) -> int:
    """0: within bounds; 1: a bound crossed or joins failed; 2: the run failed."""
    options = options_from(args)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        result = asyncio.run(run(options, say))
    except LoadError as exc:
        print(f"miscord-sfu loadtest: {exc}", file=sys.stderr)
        return 2
    print(result.summary(), flush=True)
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(result.to_json(), out, indent=2)
    return 0 if result.ok else 1
