"""Receive miscord-sfu's webhooks: verify each signature, print each event.

    python examples/webhook_receiver.py --port 9000 --secret-file /etc/miscord/secret
    miscord-sfu serve --webhook-url http://127.0.0.1:9000/hooks ...

A delivery is accepted (204) only with a valid ``Miscord-Signature`` made with
the server's secret less than 5 minutes ago; anything else gets 401 and is not
acted on. Deliveries come at least once: an app keeps the ids it has handled
(``Receiver.seen``) and ignores a repeat.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

#: a signature older than this is refused (replays)
MAX_AGE = 300


def verify(secret: str, header: str, body: bytes, now: float | None = None) -> bool:
    """Whether ``header`` (``t=<unix>,v1=<hex>``) signs ``body`` with
    ``secret`` and is fresh."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        at = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - at) > MAX_AGE:
        return False
    expected = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


class Receiver:
    """An aiohttp app that checks each delivery and hands new ones to
    ``on_event``; ``status`` answers instead of 204 when set (for testing a
    server's retries)."""

    def __init__(
        self, secret: str, on_event: Callable[[dict[str, Any]], None] = print
    ) -> None:
        self.secret = secret
        self.on_event = on_event
        self.seen: set[str] = set()
        self.app = web.Application()
        self.app.router.add_post("/hooks", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(self.secret, request.headers.get("Miscord-Signature", ""), body):
            return web.Response(status=401, text="bad signature")
        event = json.loads(body)
        if event["id"] not in self.seen:  # at least once: repeats are possible
            self.seen.add(event["id"])
            self.on_event(event)
        return web.Response(status=204)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret-file", required=True)
    args = parser.parse_args(argv)
    with open(args.secret_file, encoding="utf-8") as f:
        secret = f.read().removesuffix("\n")
    web.run_app(Receiver(secret).app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
