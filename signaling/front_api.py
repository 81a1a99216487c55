"""The HTTP side of a front (``front.Front``): its own routes, the routes it
answers for all its workers (or the whole cluster), and every other route
forwarded to the worker it concerns.

- its own: ``/ws`` (relayed), ``/healthz``, ``/readyz``, ``/api/debug/workers``;
- gathered: ``/api/channels`` (every node's record when in a cluster),
  ``/api/peers``, ``/metrics`` (each worker's series labelled ``worker``),
  ``/api/debug/websocket-stats`` and ``/api/debug/forwarding`` (per worker);
- forwarded: a channel's moderation to the worker holding it, a peer's routes
  to the worker that knows it, the web client and logins to any worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from diagnostics import logs

from .config import Settings
from .front import Front
from .http_api import json_response, support_claims
from .workers import Worker

log = logs.get("websocket")

FRONT = web.AppKey("front", Front)
#: request headers a forwarded request keeps
FORWARDED = ("Authorization", "Content-Type", "Accept", "Host", "User-Agent")


def create_front_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    front = app[FRONT] = Front(settings)
    app.router.add_get("/ws", front.websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/debug/workers", workers)
    app.router.add_get("/api/channels", channels)
    app.router.add_get("/api/peers", peers)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/debug/websocket-stats", per_worker)
    app.router.add_get("/api/debug/forwarding", per_worker)
    moderate = "/api/channels/{channel}/participants/{peer_id}/{action}"
    app.router.add_post(moderate, to_channel)
    app.router.add_route("*", "/api/peers/{peer_id}/{rest:.*}", to_peer)
    app.router.add_route("*", "/{rest:.*}", to_any)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    front = app[FRONT]
    await front.start()
    logs.success(
        log,
        "serving on %s:%s with %d worker(s)%s",
        front.settings.host,
        front.settings.port,
        front.pool.count,
        f" as {front.node} of the cluster" if front.directory else "",
    )
    yield
    await front.close()


async def _on_shutdown(app: web.Application) -> None:
    await app[FRONT].end_all()


def _support(request: web.Request) -> Front:
    front = request.app[FRONT]
    support_claims(request, front.settings.secret)
    return front


# --- its own ----------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    front = request.app[FRONT]
    held = front.channels()
    return json_response(
        {
            "status": "ok",
            "uptime": round(time.time() - front.started_at, 1),
            "connections": len(front.relays),
            "participants": sum(len(ps) for ps in held.values()),
            "channels": len(held),
            "workers": len(front.pool.live()),
            "forwarding": front.settings.forwarding,
        }
    )


async def readyz(request: web.Request) -> web.Response:
    if request.app[FRONT].draining:
        return json_response({"status": "draining"}, status=503)
    return json_response({"status": "ready"})


async def workers(request: web.Request) -> web.Response:
    front = _support(request)
    return json_response([w.view(front.node) for w in front.pool.live()])


# --- gathered ---------------------------------------------------------------


async def channels(request: web.Request) -> web.Response:
    """Every channel of the cluster (of this node's workers without one, or
    while Redis is away) and who is in it."""
    front = _support(request)
    held = dict(front.channels())
    for node, record in front.nodes.items():
        if node != front.node:
            held.update(record.get("channels", {}))
    return json_response(
        [
            {"channel": channel, "participants": held[channel]}
            for channel in sorted(held)
        ]
    )


async def _gather(request: web.Request) -> list[tuple[Worker, int, Any]]:
    """Each live worker's answer to this request: (worker, status, body)."""
    front = request.app[FRONT]

    async def ask(worker: Worker) -> tuple[Worker, int, Any]:
        status, body, _ = await _forward(worker, request)
        return worker, status, body

    answers = await asyncio.gather(
        *(ask(w) for w in front.pool.live()), return_exceptions=True
    )
    return [a for a in answers if not isinstance(a, BaseException)]


async def peers(request: web.Request) -> web.Response:
    answers = await _gather(request)
    refused = _refusal(answers)
    if refused is not None:
        return refused
    return json_response([peer for _, _, body in answers for peer in json.loads(body)])


async def per_worker(request: web.Request) -> web.Response:
    answers = await _gather(request)
    refused = _refusal(answers)
    if refused is not None:
        return refused
    front = request.app[FRONT]
    return json_response(
        {
            "front": {
                "sockets": len(front.relays),
                "users": len(front.by_user),
                "addresses": len(front.by_address),
                "placed_channels": len(front.pool.placement),
                "counters": dict(front.counters),
                "draining": front.draining,
            },
            "workers": [
                {"worker": worker.index, **json.loads(body)}
                for worker, _, body in answers
            ],
        }
    )


async def metrics(request: web.Request) -> web.Response:
    answers = await _gather(request)
    refused = _refusal(answers)
    if refused is not None:
        return refused
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Labelled({w.index: body.decode() for w, _, body in answers}))
    registry.register(_FrontCollector(request.app[FRONT]))
    return web.Response(
        body=generate_latest(registry),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def _refusal(answers: list[tuple[Worker, int, Any]]) -> web.Response | None:
    """A worker's refusal (401, 403) is the answer: they share the secret."""
    for _, status, body in answers:
        if status >= 400:
            return web.Response(
                status=status, body=body, content_type="application/json"
            )
    return None


class _Labelled:
    """The workers' series, each labelled with its worker."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for worker, text in self.texts.items():
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(
                    family.name,
                    Metric(family.name, family.documentation, family.type, family.unit),
                )
                for sample in family.samples:
                    merged.add_sample(
                        sample.name,
                        {**sample.labels, "worker": str(worker)},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
        yield from families.values()


class _FrontCollector:
    def __init__(self, front: Front) -> None:
        self.front = front

    def collect(self) -> Iterator[Metric]:
        front = self.front
        yield GaugeMetricFamily(
            "miscord_front_sockets",
            "client sockets the front relays",
            len(front.relays),
        )
        yield GaugeMetricFamily(
            "miscord_workers_live", "worker processes up", len(front.pool.live())
        )
        yield CounterMetricFamily(
            "miscord_workers_replaced",
            "workers that died and were replaced",
            front.pool.replaced,
        )


# --- forwarded --------------------------------------------------------------


async def _forward(worker: Worker, request: web.Request) -> tuple[int, bytes, str]:
    headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
    async with worker.http.request(
        request.method,
        "http://worker" + request.rel_url.path_qs,
        headers=headers,
        data=await request.read(),
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=10.0),
    ) as resp:
        body = await resp.read()
        return resp.status, body, resp.headers.get("Content-Type", "")


async def _answer(worker: Worker | None, request: web.Request) -> web.Response:
    if worker is None:
        return json_response({"error": "no such channel or peer here"}, status=404)
    try:
        status, body, content_type = await _forward(worker, request)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return json_response({"error": f"{worker} did not answer: {exc}"}, status=502)
    return web.Response(
        status=status, body=body, headers={"Content-Type": content_type}
    )


async def to_channel(request: web.Request) -> web.Response:
    front = request.app[FRONT]
    return await _answer(front.pool.holder(request.match_info["channel"]), request)


async def to_peer(request: web.Request) -> web.Response:
    """The first worker that knows the peer answers (a 404 from all: 404)."""
    front = request.app[FRONT]
    response = None
    for worker in front.pool.live():
        response = await _answer(worker, request)
        if response.status != 404:
            return response
    return response or await _answer(None, request)


async def to_any(request: web.Request) -> web.Response:
    live = request.app[FRONT].pool.live()
    return await _answer(live[0] if live else None, request)
