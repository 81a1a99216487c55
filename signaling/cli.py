"""The ``miscord-sfu`` command: ``serve``, ``token`` (and ``loadtest``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
from collections.abc import Sequence

from aiohttp import web

from diagnostics import logs
from miscord_client.load import cli as loadtest

from . import auth, config, drain


def _raise_open_files_limit() -> None:
    """Every WebSocket and every ICE socket is a file: allow the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = config.from_sources(args)
    except ValueError as exc:
        print(f"miscord-sfu serve: {exc}", file=sys.stderr)
        return 2
    _raise_open_files_limit()
    logs.configure(
        settings.log_level,
        settings.log_format,
        secrets=[settings.secret, settings.turn_secret],
    )
    from .app import create_app

    if settings.secret_generated:
        logs.get("debug").info(
            "no --secret given: a random one was made for this run%s",
            " (development login enabled on this loopback bind)"
            if settings.dev_login
            else "",
        )
    if settings.front:
        from .front_api import FRONT, create_front_app

        app = create_front_app(settings)
        drains = app[FRONT].drain
    else:
        app = create_app(settings)
        drains = drain.drainer(app)
    # what exists now (modules, classes, the app) lives as long as the process:
    # full collections stop walking it, which made them most of the GC's cost
    gc.freeze()
    asyncio.run(
        drain.serve(
            app,
            lambda runner: web.TCPSite(runner, settings.host, settings.port),
            drains,
        )
    )
    return 0


def _config_sample(args: argparse.Namespace) -> int:
    print(config.config_sample(), end="")
    return 0


def _rights(text: str) -> list[str]:
    rights = [r.strip() for r in text.split(",") if r.strip()]
    unknown = set(rights) - set(auth.RIGHTS)
    if unknown:
        known = ",".join(auth.RIGHTS)
        raise argparse.ArgumentTypeError(
            f"unknown right(s) {', '.join(sorted(unknown))}: use {known}"
        )
    return rights


def _token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get(config.env_name("secret"))
    if args.secret_file and not secret:
        with open(args.secret_file, encoding="utf-8") as f:
            secret = f.read().removesuffix("\n")
    if not secret:
        print(
            "miscord-sfu token: give --secret-file, --secret or set SFU_SECRET",
            file=sys.stderr,
        )
        return 2
    if not args.channel:
        print(
            "miscord-sfu token: give --channel C (repeat), or --channel '*' for "
            "every channel",
            file=sys.stderr,
        )
        return 2
    print(
        auth.issue(
            secret,
            args.user,
            args.channel,
            role=args.role,
            ttl=args.ttl,
            name=args.name,
            can=args.can,
        )
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="miscord-sfu", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (web client, /ws, APIs)")
    config.add_arguments(serve)
    serve.set_defaults(run=_serve)
    sample = sub.add_parser(
        "config-sample", help="print a complete config file (every setting)"
    )
    sample.set_defaults(run=_config_sample)
    token = sub.add_parser("token", help="print an access token")
    token.add_argument("--user", required=True)
    token.add_argument(
        "--channel",
        action="append",
        help="a channel it may join (repeat; '*' for every channel); required",
    )
    token.add_argument("--role", choices=auth.ROLES, default="member")
    token.add_argument(
        "--can",
        type=_rights,
        help=f"rights, comma-separated, among {','.join(auth.RIGHTS)} (default: all)",
    )
    token.add_argument("--ttl", type=float, default=24 * 3600, help="seconds valid")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--secret", help="server secret [SFU_SECRET]")
    token.add_argument("--secret-file", help="a file holding the server secret")
    token.set_defaults(run=_token)
    load = sub.add_parser(
        "loadtest", help="synthetic participants against a running server"
    )
    loadtest.add_arguments(load)
    load.set_defaults(run=loadtest.main)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
