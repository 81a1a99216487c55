"""The front of a node with worker processes (``--workers N``) or in a
cluster (``--redis-url``): it holds every client socket and relays each to
the worker, or the node, holding its channel (``relay``).

It owns the workers (``WorkerPool``), the cluster directory (``Directory``,
when there is one) and the relays: one live socket per (user, kind) across
workers, as a single process keeps it (a newer join on another worker makes
the older one ``leave`` and closes it 4001); a dead worker's or node's sockets
closed 1011; a drain that refuses newcomers and lets every worker drain.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from diagnostics import logs
from miscord_client.protocol import Close
from sfu.tasks import TaskGroup

from . import auth, drain, protocol
from .cluster import Directory, DirectoryError
from .config import Settings
from .protocol import ProtocolError
from .relay import LOST, Relay
from .session import client_address, client_socket
from .targets import Node, Target
from .voices import channel_of
from .workers import Worker, WorkerPool

log = logs.get("websocket")

NODE_LOST = "the node holding this channel's media is gone; join again"


class Front:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = settings.own_url
        self.pool = WorkerPool(settings, self._worker_died, self.in_use)
        self.directory = (
            Directory(settings.redis_url, self.node, settings.cluster_lease)
            if settings.redis_url
            else None
        )
        self.relays: set[Relay] = set()
        self.by_user: dict[tuple[str, str], Relay] = {}
        self.by_address: collections.Counter[str] = collections.Counter()
        #: relayed sockets per channel (an events watcher holds one too)
        self.by_channel: collections.Counter[str] = collections.Counter()
        self.counters: collections.Counter[str] = collections.Counter()
        #: nodes of the cluster with a live record (the last look)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.draining = False
        self.started_at = time.time()
        self.tasks = TaskGroup("front")
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        await self.pool.start()
        if self.directory is not None:
            self.tasks.spawn(self._cluster_forever(), "cluster")

    def in_use(self, channel: str) -> bool:
        return channel in self.by_channel

    # --- a client socket -----------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        settings = self.settings
        remote = client_address(request, settings.trusted_proxies, settings.secret)
        # a socket another node relays is served here, never relayed on
        relayed = (
            auth.relayed_for(settings.secret, request.headers.get(auth.RELAYED_FOR, ""))
            is not None
        )
        if self.by_address[remote] >= settings.max_sockets_per_address:
            raise web.HTTPTooManyRequests(
                text=json.dumps({"error": f"too many sockets: {remote} holds enough"}),
                content_type="application/json",
            )
        ws = client_socket(settings.max_message_bytes)
        await ws.prepare(request)
        relay = Relay(ws, remote)
        self.relays.add(relay)
        self.by_address[remote] += 1
        self.counters["opened"] += 1
        try:
            first = await self._first_message(relay)
            if first is not None:
                self.by_channel[relay.channel] += 1
                try:
                    await self._serve(relay, first, relayed)
                finally:
                    self.by_channel[relay.channel] -= 1
                    if not self.by_channel[relay.channel]:
                        del self.by_channel[relay.channel]
        finally:
            self._forget(relay)
        return ws

    async def _first_message(self, relay: Relay) -> str | None:
        """The client's ``join`` or ``resume`` (its channel read), answering
        what comes before it; None when the socket ended first."""
        ws = relay.ws
        deadline = time.monotonic() + self.settings.join_timeout
        while True:
            try:
                msg = await ws.receive(timeout=deadline - time.monotonic())
            except TimeoutError:
                await relay.end(Close.TIMEOUT, "no join in time")
                return None
            if msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type != WSMsgType.TEXT:
                return None
            try:
                envelope = protocol.parse(msg.data)
            except ProtocolError as exc:
                await ws.send_json(protocol.error(exc.code, exc.message, exc.ref))
                continue
            body: Any = envelope.body
            if envelope.type == "join":
                relay.channel = body.channel
                with contextlib.suppress(auth.AuthError):  # the worker refuses it
                    claims = auth.verify(self.settings.secret, body.token)
                    relay.user = (claims.user_id, body.kind)
                return str(msg.data)
            if envelope.type == "resume":
                relay.channel = channel_of(body.token)
                return str(msg.data)
            if envelope.type == "ping":
                await ws.send_json({"type": "pong", "ref": envelope.ref})
            else:
                await ws.send_json(
                    protocol.error(protocol.NOT_JOINED, "send join first", envelope.ref)
                )

    async def _serve(self, relay: Relay, first: str, relayed: bool) -> None:
        if self.draining:
            await relay.end(Close.TRY_AGAIN_LATER, "draining: try again later")
            return
        try:
            target = await self._target(relay.channel, relayed)
        except DirectoryError as exc:
            log.warning("refused a join: %s", exc)
            await relay.end(Close.TRY_AGAIN_LATER, "the cluster is unreachable: retry")
            return
        if target is None:
            await relay.end(Close.TRY_AGAIN_LATER, "no worker is up: try again")
            return
        await self._replace_older(relay, target)
        try:
            await relay.connect(target, self.settings.secret, first)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # a node that just died keeps its channels until its lease lapses
            log.warning("could not reach %s: %s", target, exc)
            await relay.end(Close.TRY_AGAIN_LATER, f"{target} is unreachable: retry")
            return
        if relay.user is not None:
            self.by_user[relay.user] = relay
        self.counters["relayed"] += 1
        await relay.pump()

    async def _target(self, channel: str, relayed: bool) -> Target | None:
        """Where ``channel``'s sockets go: a worker of this node, or the node
        the directory says holds it (a free channel is claimed here)."""
        if self.directory is not None and not relayed:
            owner = await self.directory.owner(channel)
            if owner is not None and owner != self.node:
                assert self._http is not None
                return Node(owner, self._http)
        if not channel:  # a resume token naming none: any worker refuses it
            return self.pool.least_loaded()
        return self.pool.place(channel)

    async def _replace_older(self, relay: Relay, target: Target) -> None:
        """One live socket per (user, kind): an older one on another worker
        or node leaves and closes 4001 (the same one replaces it itself)."""
        old = self.by_user.get(relay.user) if relay.user else None
        if old is None or old.target is target or old.upstream is None:
            return
        log.info("%s joined elsewhere: replacing its older socket", relay.user)
        with contextlib.suppress(ConnectionError):
            await old.upstream.send_json({"type": "leave"})
        await old.end(Close.REPLACED, "replaced by a newer connection")

    def _forget(self, relay: Relay) -> None:
        self.relays.discard(relay)
        self.by_address[relay.remote] -= 1
        if not self.by_address[relay.remote]:
            del self.by_address[relay.remote]
        if relay.user is not None and self.by_user.get(relay.user) is relay:
            del self.by_user[relay.user]

    def _close_all(self, lost: Any, reason: str) -> None:
        """Close every socket relayed to a target ``lost(target)`` says is gone."""
        for relay in list(self.relays):
            if relay.target is not None and lost(relay.target):
                self.counters["lost"] += 1
                self.tasks.spawn(relay.end(Close.MEDIA_LOST, reason), "lost")

    def _worker_died(self, worker: Worker) -> None:
        self._close_all(lambda target: target is worker, LOST)

    # --- the cluster ---------------------------------------------------------

    async def _cluster_forever(self) -> None:
        """Renew this node's leases and record; notice nodes that are gone."""
        assert self.directory is not None
        lease = self.settings.cluster_lease
        reachable_since = time.monotonic()
        while True:
            record = {
                "node": self.node,
                "draining": self.draining,
                "channels": self.channels(),
            }
            try:
                await self.directory.renew(list(self.pool.placement), record)
                self.nodes = await self.directory.records()
            except DirectoryError as exc:
                log.warning("%s: calls go on", exc)
                reachable_since = math.inf
                self.nodes = {}  # /api/channels: this node's own, meanwhile
            else:
                reachable_since = min(reachable_since, time.monotonic())
                # after an outage every node needs a moment to renew its record
                if time.monotonic() - reachable_since >= lease / 2:
                    self._close_all(
                        lambda t: isinstance(t, Node) and t.url not in self.nodes,
                        NODE_LOST,
                    )
            await asyncio.sleep(lease / 4)

    def channels(self) -> dict[str, list[dict[str, Any]]]:
        """The channels this node's workers hold, with their participants."""
        return {
            channel: participants
            for worker in self.pool.live()
            for channel, participants in worker.channels.items()
        }

    # --- stopping ------------------------------------------------------------

    async def drain(self) -> None:
        """Refuse newcomers (1013, ``/readyz`` 503); every worker drains its
        calls (SIGTERM), and this waits for them all."""
        self.draining = True
        drain.notify("STOPPING=1")
        log.warning("draining %d worker(s)", len(self.pool.live()))
        await self.pool.drain()

    async def end_all(self) -> None:
        """Close every client socket with 1001 (the app shuts down)."""
        for relay in list(self.relays):
            await relay.end(Close.GOING_AWAY, "server shutting down")

    async def close(self) -> None:
        await self.end_all()
        await self.tasks.close()
        await self.pool.close()
        if self.directory is not None:
            await self.directory.release(list(self.pool.placement))
            await self.directory.close()
        if self._http is not None:
            await self._http.close()
