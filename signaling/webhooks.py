"""Webhooks (contract 1.1): what happens in channels, POSTed to the app.

One JSON object per event, signed ``Miscord-Signature: t=<unix>,v1=<hex
HMAC-SHA256(secret, "<t>." + body)>``, delivered at least once and in order
per channel and receiver: a failed delivery (an error, a non-2xx answer, no
answer within ``TIMEOUT``) is retried with the same id and body, after 1 s and
then with exponential backoff, and holds back its channel's later events until
it is accepted or given up (after ``GIVE_UP`` seconds). Each receiver has a
bounded queue; an event that does not fit is counted and logged, never
waited for: delivery never delays signaling or media.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily, Metric

from diagnostics import logs
from diagnostics.histogram import Histogram
from sfu import events
from sfu.server import SfuServer
from sfu.tasks import TaskGroup

from .messages import participant_info

log = logs.get("websocket")

#: seconds a receiver has to answer one delivery
TIMEOUT = 10.0
#: the first retry's delay, doubled per failure up to ``MAX_DELAY``
FIRST_RETRY = 1.0
MAX_DELAY = 60.0
#: seconds of retries before an event is given up
GIVE_UP = 15 * 60.0
#: events waiting per receiver, all channels together
QUEUE_LIMIT = 10_000
SIGNATURE = "Miscord-Signature"


def sign(secret: str, body: bytes, at: int) -> str:
    """The ``Miscord-Signature`` header value of ``body`` sent at ``at``."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256)
    return f"t={at},v1={mac.hexdigest()}"


@dataclass
class Delivery:
    id: str
    channel: str
    body: bytes
    created: float = field(default_factory=time.monotonic)
    first_tried: float | None = None
    attempts: int = 0


@dataclass(eq=False)
class Receiver:
    """One URL: a queue per channel, a worker per channel with events."""

    url: str
    queues: dict[str, deque[Delivery]] = field(default_factory=dict)
    workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    queued: int = 0


class Webhooks:
    """Turns the media core's events into webhook deliveries. ``close`` stops
    every worker (what is still queued is dropped, and logged)."""

    def __init__(self, urls: list[str], secret: str, sfu: SfuServer) -> None:
        self.receivers = [Receiver(url) for url in urls]
        self.secret = secret
        self.sfu = sfu
        self.counts: Counter[str] = Counter()
        self.tasks = TaskGroup("webhooks")
        self._session: aiohttp.ClientSession | None = None
        #: seconds from an event to its accepted delivery (retries included)
        self.delivery_seconds = Histogram()
        self._open: set[str] = set()  # channels told started, not finished
        self._people: dict[str, dict[str, Any]] = {}  # peer id -> participant

    # --- from the event bus --------------------------------------------------------

    def __call__(self, event: events.Event) -> None:
        if not self.receivers:
            return
        channel = event.channel_id
        match event:
            case events.ParticipantJoined(participant=view):
                if channel not in self._open:
                    self._open.add(channel)
                    self._emit("channel_started", channel)
                person = dict(participant_info(view))
                self._people[view.peer_id] = person
                self._emit("participant_joined", channel, participant=person)
            case events.TrackPublished(source=source):
                self._emit_about(event, "track_published", source=source)
            case events.TrackUnpublished(source=source):
                self._emit_about(event, "track_unpublished", source=source)
            case events.ParticipantLeft(reason=reason):
                self._emit_about(event, "participant_left", reason=reason)
                self._people.pop(event.peer_id or "", None)
                if channel not in self.sfu.channels and channel in self._open:
                    self._open.discard(channel)
                    self._emit("channel_finished", channel)

    def _emit_about(self, event: events.Event, kind: str, **extra: Any) -> None:
        person = self._people.get(event.peer_id or "", {"peer_id": event.peer_id})
        self._emit(kind, event.channel_id, participant=person, **extra)

    def _emit(self, kind: str, channel: str, **extra: Any) -> None:
        payload = {
            "id": secrets.token_hex(12),
            "event": kind,
            "created_at": round(time.time(), 3),
            "channel": channel,
            **extra,
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        for receiver in self.receivers:
            if receiver.queued >= QUEUE_LIMIT:
                self.counts["dropped"] += 1
                log.error("webhook queue of %s full: %s dropped", receiver.url, kind)
                continue
            receiver.queues.setdefault(channel, deque()).append(
                Delivery(payload["id"], channel, body)
            )
            receiver.queued += 1
            worker = receiver.workers.get(channel)
            if worker is None or worker.done():
                receiver.workers[channel] = self.tasks.spawn(
                    self._deliver_channel(receiver, channel), f"webhook:{channel}"
                )

    # --- delivering ----------------------------------------------------------------

    async def _deliver_channel(self, receiver: Receiver, channel: str) -> None:
        """The channel's events to one receiver, in order, each until it is
        accepted or given up."""
        queue = receiver.queues[channel]
        while queue:
            delivery = queue[0]
            await self._deliver(receiver, delivery)
            queue.popleft()
            receiver.queued -= 1
        del receiver.queues[channel]

    async def _deliver(self, receiver: Receiver, delivery: Delivery) -> None:
        delay = FIRST_RETRY
        delivery.first_tried = time.monotonic()
        while True:
            delivery.attempts += 1
            problem = await self._post(receiver.url, delivery.body)
            if problem is None:
                self.counts["delivered"] += 1
                self.delivery_seconds.observe(time.monotonic() - delivery.created)
                return
            self.counts["failed_attempts"] += 1
            if time.monotonic() - delivery.first_tried > GIVE_UP:
                self.counts["given_up"] += 1
                log.error(
                    "webhook %s to %s given up after %d attempts: %s",
                    delivery.id,
                    receiver.url,
                    delivery.attempts,
                    problem,
                )
                return
            log.warning(
                "webhook %s to %s failed (%s): again in %.0f s",
                delivery.id,
                receiver.url,
                problem,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _post(self, url: str, body: bytes) -> str | None:
        """None when the receiver accepted it (2xx), else what went wrong."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT)
            )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE: sign(self.secret, body, int(time.time())),
        }
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except TimeoutError:
            return f"no answer within {TIMEOUT:.0f} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def stats(self) -> dict[str, Any]:
        """Deliveries so far and what waits, per receiver (websocket-stats)."""
        return {
            "counts": dict(self.counts),
            "queued": {r.url: r.queued for r in self.receivers},
        }

    def collect(self) -> Iterator[Metric]:
        """Its /metrics (a prometheus-client collector)."""
        outcomes = CounterMetricFamily(
            "miscord_webhook_deliveries",
            "Webhook deliveries by outcome",
            labels=["outcome"],
        )
        for outcome in ("delivered", "failed_attempts", "given_up", "dropped"):
            outcomes.add_metric([outcome], self.counts.get(outcome, 0))
        yield outcomes
        yield self.delivery_seconds.family(
            "miscord_webhook_delivery_seconds",
            "Seconds from an event to its accepted delivery",
        )

    async def close(self) -> None:
        pending = sum(r.queued for r in self.receivers)
        if pending:
            log.warning("%d webhook deliveries dropped at shutdown", pending)
        await self.tasks.close()
        if self._session is not None:
            await self._session.close()
