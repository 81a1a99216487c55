"""Webhooks (contract 1.1) against a receiver the test starts (the example's,
examples/webhook_receiver.py): signed, in order per channel, retried with the
same id after failures, and never in the way of signaling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from signaling import webhooks
from signaling.webhooks import sign
from tests.conftest import SECRET
from tests.diag_call import fetch
from tests.integration.test_examples import example
from tests.media import ToneTrack

webhook_receiver = example("webhook_receiver")


Handler = Callable[[web.Request], Awaitable[web.Response]]


async def receiver(start_server, handler: Handler) -> tuple[TestServer, Any]:
    """A receiver answering with ``handler`` at /hooks, and a server that
    delivers to it."""
    app = web.Application()
    app.router.add_post("/hooks", handler)
    site = TestServer(app, host="127.0.0.1", port=0)
    await site.start_server()
    return site, await start_server(webhook_urls=[str(site.make_url("/hooks"))])


async def settle(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def test_a_call_is_told_in_order_and_signed(start_server, clients):
    events: list[dict[str, Any]] = []
    hooks = webhook_receiver.Receiver(SECRET, events.append)
    site, server = await receiver(start_server, hooks.handle)
    try:
        alice = clients(server, "alice")
        await alice.join("room")
        await alice.publish(microphone=ToneTrack(440))
        await settle(lambda: len(events) >= 3)
        await alice.leave()
        await settle(lambda: len(events) >= 6)
        kinds = [e["event"] for e in events]
        assert kinds == [
            "channel_started",
            "participant_joined",
            "track_published",
            "track_unpublished",
            "participant_left",
            "channel_finished",
        ]
        assert {e["channel"] for e in events} == {"room"}
        assert len({e["id"] for e in events}) == 6
        joined, published, left = events[1], events[2], events[4]
        assert joined["participant"]["user_id"] == "alice"
        assert published["source"] == "microphone"
        assert published["participant"]["peer_id"] == joined["participant"]["peer_id"]
        assert left["reason"] == "left"
        assert server.services.webhooks.counts["delivered"] == 6
        status, text = await fetch(server, "/metrics", token=None)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        delivered = ("miscord_webhook_deliveries_total", (("outcome", "delivered"),))
        assert status == 200 and samples[delivered] == 6
        assert samples["miscord_webhook_delivery_seconds_count", ()] == 6
    finally:
        await site.close()


def test_the_signature_is_checked():
    body = b'{"id":"x"}'
    good = sign(SECRET, body, 1000)
    assert webhook_receiver.verify(SECRET, good, body, now=1000)
    assert not webhook_receiver.verify(SECRET, good, body + b" ", now=1000)
    assert not webhook_receiver.verify("another secret" * 3, good, body, now=1000)
    assert not webhook_receiver.verify(SECRET, good, body, now=1000 + 301)  # stale
    assert not webhook_receiver.verify(SECRET, "garbage", body, now=1000)


async def test_failures_are_retried_with_the_same_id_and_hold_the_channel_back(
    start_server, clients
):
    attempts: list[tuple[str, str]] = []
    failures = {"left": 2}

    async def flaky(request: web.Request) -> web.Response:
        event = await request.json()
        attempts.append((event["id"], event["event"]))
        if event["event"] == "participant_joined" and failures["left"]:
            failures["left"] -= 1
            return web.Response(status=500)
        return web.Response(status=204)

    site, server = await receiver(start_server, flaky)
    try:
        alice = clients(server, "alice")
        await alice.join("room")
        await alice.publish(microphone=ToneTrack(440))
        await settle(lambda: any(kind == "track_published" for _, kind in attempts))
        kinds = [kind for _, kind in attempts]
        # the join, tried three times (1 s, then 2 s apart), before what follows
        assert kinds[:4] == ["channel_started"] + ["participant_joined"] * 3
        assert kinds[4] == "track_published"
        ids = [i for i, kind in attempts if kind == "participant_joined"]
        assert len(set(ids)) == 1  # the same delivery each time
        assert server.services.webhooks.stats()["counts"]["failed_attempts"] == 2
    finally:
        await site.close()


async def test_a_receiver_that_hangs_delays_no_join(start_server, clients):
    hung, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        hung.set()
        await release.wait()  # far past the server's 10 s: until the test ends
        return web.Response(status=204)

    site, server = await receiver(start_server, hang)
    try:
        first = clients(server, "alice")
        await first.join("room")
        await asyncio.wait_for(hung.wait(), 5)  # its first delivery hangs
        started = time.monotonic()
        for user in ("bob", "carol"):
            await clients(server, user).join("room")
        took = time.monotonic() - started
        print(f"\ntwo joins while the receiver hangs: {took * 1000:.0f} ms")
        assert took < 1.0
    finally:
        release.set()
        await site.close()


async def test_a_full_queue_drops_and_a_dead_receiver_is_given_up(
    start_server, clients, monkeypatch
):
    """The bounds, made small: two events may wait per receiver, and an event
    is given up after half a second of failures; the channel's next ones go."""
    monkeypatch.setattr(webhooks, "QUEUE_LIMIT", 2)
    monkeypatch.setattr(webhooks, "GIVE_UP", 0.5)
    monkeypatch.setattr(webhooks, "FIRST_RETRY", 0.2)
    attempts: list[str] = []

    async def dead(request: web.Request) -> web.Response:
        attempts.append((await request.json())["event"])
        return web.Response(status=503)

    site, server = await receiver(start_server, dead)
    try:
        alice = clients(server, "alice")
        await alice.join("room")  # channel_started and participant_joined wait
        await alice.publish(microphone=ToneTrack(440))  # track_published: full
        hooks = server.services.webhooks
        await settle(lambda: hooks.counts["given_up"] >= 2, timeout=10)
        assert hooks.counts["dropped"] >= 1
        assert hooks.stats()["queued"] == {next(iter(hooks.stats()["queued"])): 0}
        # each was tried until it was given up, the second after the first
        assert attempts.index("participant_joined") > attempts.index("channel_started")
        assert "track_published" not in attempts  # it never fitted
    finally:
        await site.close()
