"""The connection manager: every live WebSocket, who it is and where, in one place.

One live connection per (user, kind): a newer one replaces the older, which is
closed with 4001 and torn down completely before the newer is registered. A
disconnect needs only the socket. Sends go through a bounded per-connection
outbox drained by one writer task, so a broadcast never waits on a slow or
broken socket; a send that fails drops that connection alone. Heartbeats reap
sockets that stopped answering; a periodic sweep repairs anything stale.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from diagnostics import logs
from diagnostics.histogram import Histogram
from miscord_client.protocol import Close, ServerMessage
from sfu.tasks import TaskGroup

if TYPE_CHECKING:
    from sfu.participant import Participant

    from .config import Settings
    from .voices import Voice, Voices

log = logs.get("websocket")

#: why a connection ended, for participant_left and the counters
LEFT, REPLACED, TIMEOUT, ERROR = "left", "replaced", "timeout", "error"
#: (1.1) an admin removed it
KICKED = "kicked"


@dataclass(eq=False)
class Connection:
    """One WebSocket and what the manager knows about it."""

    id: str
    ws: web.WebSocketResponse
    request: web.Request
    remote: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.monotonic)
    user_id: str | None = None
    name: str | None = None
    role: str | None = None
    channel: str | None = None
    kind: str | None = None
    participant: Participant | None = None
    #: the voice participant this socket carries (see ``voices``)
    voice: Voice | None = None
    peer_id: str | None = None  # kept after the participant is released
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    closing: bool = False
    close_code: int | None = None
    outbox: asyncio.Queue[tuple[str, Any]] = field(
        default_factory=lambda: asyncio.Queue()
    )
    writer: asyncio.Task[None] | None = None

    @property
    def joined(self) -> bool:
        return self.kind is not None

    def metadata(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "role": self.role,
            "channel": self.channel,
            "kind": self.kind,
            "peer_id": self.peer_id,
            "remote_address": self.remote,
            "user_agent": self.user_agent,
            "connected_at": self.connected_at,
            "last_activity_ago": round(now - self.last_activity, 3),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "outbox": self.outbox.qsize(),
        }


class ConnectionManager:
    def __init__(self, settings: Settings, voices: Voices) -> None:
        self.settings = settings
        #: voice participants, kept across sockets for a resume
        self.voices = voices
        #: the server drains (SIGTERM): no joins, no resumes, nothing kept
        self.live: dict[str, Connection] = {}
        self.by_user: dict[tuple[str, str], Connection] = {}
        self.by_channel: dict[str, set[Connection]] = {}
        self.by_peer: dict[str, Connection] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        #: live sockets per client address, and those not yet joined
        self.by_address: collections.Counter[str] = collections.Counter()
        self.unjoined: set[str] = set()
        #: live sockets by kind ("unjoined" until they join), kept as they change
        self.kinds: collections.Counter[str] = collections.Counter()
        self.draining = False
        #: seconds from a join to its joined (/metrics)
        self.join_seconds = Histogram()
        self.tasks = TaskGroup("connections")
        self._user_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # --- lifecycle of one connection -----------------------------------------------

    def admit(self, remote: str) -> str | None:
        """Why a new socket from ``remote`` is refused (None: it is not)."""
        settings = self.settings
        if self.by_address[remote] >= settings.max_sockets_per_address:
            return f"{remote} holds {settings.max_sockets_per_address} sockets"
        if len(self.unjoined) >= settings.max_unjoined_sockets:
            return f"{settings.max_unjoined_sockets} sockets have not joined yet"
        return None

    def open(
        self, ws: web.WebSocketResponse, request: web.Request, remote: str
    ) -> Connection:
        conn = Connection(
            id=secrets.token_hex(6),
            ws=ws,
            request=request,
            remote=remote,
            user_agent=request.headers.get("User-Agent", "")[:256],
        )
        conn.writer = self.tasks.spawn(self._write(conn), f"writer:{conn.id}")
        self.live[conn.id] = conn
        self.by_address[remote] += 1
        self.unjoined.add(conn.id)
        self.kinds["unjoined"] += 1
        self.counters["opened"] += 1
        log.debug("socket %s opened from %s", conn.id, conn.remote)
        return conn

    def user_lock(self, user_id: str, kind: str) -> asyncio.Lock:
        return self._user_locks.setdefault((user_id, kind), asyncio.Lock())

    def current(self, user_id: str, kind: str) -> Connection | None:
        return self.by_user.get((user_id, kind))

    def register(self, conn: Connection) -> None:
        """Index a joined connection (the caller holds the user lock and has
        already closed any connection it replaces)."""
        assert conn.user_id is not None and conn.kind is not None
        assert conn.channel is not None
        key = (conn.user_id, conn.kind)
        assert key not in self.by_user, "replace the old connection first"
        self.by_user[key] = conn
        self.unjoined.discard(conn.id)
        self.kinds["unjoined"] -= 1
        self.kinds[conn.kind] += 1
        self.by_channel.setdefault(conn.channel, set()).add(conn)
        if conn.peer_id is not None:
            self.by_peer[conn.peer_id] = conn
        logs.success(
            log,
            "%s (%s) joined %s as %s on socket %s",
            conn.name,
            conn.user_id,
            conn.channel,
            conn.kind,
            conn.id,
        )

    def _unregister(self, conn: Connection) -> None:
        if self.live.pop(conn.id, None) is not None:
            self.by_address[conn.remote] -= 1
            if not self.by_address[conn.remote]:
                del self.by_address[conn.remote]
            kind = "unjoined" if conn.id in self.unjoined else conn.kind or ""
            self.kinds[kind] -= 1
            self.unjoined.discard(conn.id)
        if conn.user_id is not None and conn.kind is not None:
            key = (conn.user_id, conn.kind)
            if self.by_user.get(key) is conn:
                del self.by_user[key]
                lock = self._user_locks.get(key)
                if lock is not None and not lock.locked():
                    del self._user_locks[key]
        if conn.channel is not None:
            members = self.by_channel.get(conn.channel)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.by_channel[conn.channel]
        if conn.peer_id is not None and self.by_peer.get(conn.peer_id) is conn:
            del self.by_peer[conn.peer_id]

    async def end(
        self, conn: Connection, reason: str, code: int, message: str = ""
    ) -> None:
        """The one way a connection, and the participant it carries, ends
        for good (a leave, a newer connection, a media timeout, abuse,
        shutdown; ``lose`` for a socket that merely went away): unregister
        it, end its voice participant, then close the socket with ``code``.
        Idempotent: the first end decides. ``reason`` is what the others in
        the channel are told.
        """
        if conn.closing:
            if conn.writer is not None and conn.writer is not asyncio.current_task():
                await asyncio.wait({conn.writer}, timeout=5)
            return
        conn.closing = True
        conn.close_code = code
        self._unregister(conn)
        voice, conn.voice = conn.voice, None
        if voice is not None:
            try:
                await self.voices.end(voice, reason)
            except Exception:
                log.exception("ending the participant of socket %s failed", conn.id)
        conn.participant = None  # the socket may outlive its media session
        self.counters["closed"] += 1
        conn.outbox.put_nowait(("close", (code, message)))
        if conn.writer is not None and conn.writer is not asyncio.current_task():
            await asyncio.wait({conn.writer}, timeout=5)
            if not conn.writer.done():
                # the peer does not read: cut the TCP connection under it
                conn.writer.cancel()
                if conn.request.transport is not None:
                    conn.request.transport.close()
        level = logging.INFO if code in (1000, 1001, 4001) else logging.WARNING
        log.log(level, "socket %s closed %d %s", conn.id, code, message)

    async def lose(
        self, conn: Connection, reason: str, code: int, message: str = ""
    ) -> None:
        """The socket went away without ``leave`` (it broke, closed, or its
        heartbeat stopped): its voice participant is kept for a resume
        (``Voices.lose``) and the others see nothing; anything else ends."""
        voice = conn.voice
        if voice is None or conn.closing or self.voices.grace <= 0 or self.draining:
            await self.end(conn, reason, code, message)
            return
        conn.voice = None
        self.counters["kept"] += 1
        self.voices.lose(voice)
        await self.end(conn, reason, code, message)

    async def hand_over(self, old: Connection) -> None:
        """A resume took ``old``'s participant: close ``old`` (4001) alone."""
        old.voice = None
        await self.end(old, REPLACED, Close.REPLACED, "resumed on another connection")

    async def replace(self, old: Connection) -> None:
        self.counters["replaced"] += 1
        await self.end(old, REPLACED, Close.REPLACED, "replaced by a newer connection")

    async def drop_broken(self, conn: Connection, why: str) -> None:
        if conn.closing:
            return
        self.counters["dropped_broken"] += 1
        log.warning("socket %s is broken (%s): dropping it", conn.id, why)
        await self.lose(conn, ERROR, 1011, "broken")

    # --- sending --------------------------------------------------------------------

    def send(self, conn: Connection, message: ServerMessage) -> None:
        """Queue a message; never blocks. A socket too slow to drain is dropped."""
        if conn.closing:
            return
        if conn.outbox.qsize() >= self.settings.outbox_limit:
            self.tasks.spawn(self.drop_broken(conn, "outbox full"), "drop")
            return
        conn.outbox.put_nowait(("send", message))

    def broadcast(
        self, channel: str, message: ServerMessage, exclude: Connection | None = None
    ) -> int:
        sent = 0
        for conn in list(self.by_channel.get(channel, ())):
            if conn is not exclude:
                self.send(conn, message)
                sent += 1
        return sent

    async def _write(self, conn: Connection) -> None:
        while True:
            what, payload = await conn.outbox.get()
            if what == "close":
                code, message = payload
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=code, message=message.encode()[:120])
                return
            text = json.dumps(payload, separators=(",", ":"))
            try:
                await conn.ws.send_str(text)
            except Exception as exc:
                self.tasks.spawn(
                    self.drop_broken(conn, f"{type(exc).__name__}: {exc}"), "drop"
                )
                return
            conn.messages_out += 1
            conn.bytes_out += len(text)

    # --- heartbeats and sweeping ------------------------------------------------------

    async def heartbeat(self) -> None:
        """Ping every socket; close those silent past ``heartbeat_timeout``."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self.beat()

    async def beat(self) -> None:
        now = time.monotonic()
        for conn in list(self.live.values()):
            if conn.closing:
                continue
            if now - conn.last_activity > self.settings.heartbeat_timeout:
                self.counters["reaped_stale"] += 1
                log.warning(
                    "socket %s silent for %.0f s: heartbeat lost",
                    conn.id,
                    now - conn.last_activity,
                )
                self.tasks.spawn(
                    self.lose(conn, TIMEOUT, Close.TIMEOUT, "heartbeat lost"), "reap"
                )
                continue
            try:
                await conn.ws.ping()
            except Exception as exc:
                self.tasks.spawn(self.drop_broken(conn, f"ping failed: {exc}"), "drop")

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            await self.sweep()

    async def sweep(self) -> int:
        """Close what is stale: sockets already closed underneath, sockets never
        joined past the join deadline, index entries of closed connections."""
        reaped = 0
        now = time.monotonic()
        for conn in list(self.live.values()):
            stale = conn.ws.closed or (
                not conn.joined
                and now - conn.last_activity > self.settings.join_timeout * 2
            )
            if stale and not conn.closing:
                reaped += 1
                self.counters["reaped_stale"] += 1
                await self.lose(conn, TIMEOUT, Close.TIMEOUT, "stale")
        for index in (self.by_user, self.by_peer):
            for key, conn in list(index.items()):
                if conn.closing or conn.id not in self.live:
                    del index[key]  # type: ignore[arg-type]
                    reaped += 1
        for channel, members in list(self.by_channel.items()):
            members.difference_update({c for c in members if c.closing})
            if not members:
                del self.by_channel[channel]
        if reaped:
            log.warning("sweep reaped %d stale entries", reaped)
        return reaped

    async def shutdown(self) -> None:
        """Close every connection with 1001, end the participants kept for a
        resume, and stop every task."""
        await asyncio.gather(
            *(
                self.end(conn, LEFT, Close.GOING_AWAY, "server shutting down")
                for conn in list(self.live.values())
            ),
            return_exceptions=True,
        )
        await self.voices.close()
        await self.tasks.close()

    # --- statistics -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        by_kind: collections.Counter[str] = collections.Counter(
            c.kind or "unjoined" for c in self.live.values()
        )
        return {
            "live": len(self.live),
            "by_kind": dict(by_kind),
            "by_channel": {
                channel: dict(collections.Counter(c.kind for c in members))
                for channel, members in self.by_channel.items()
            },
            "connections": [c.metadata() for c in self.live.values()],
            "counters": {
                name: self.counters[name]
                for name in (
                    "opened",
                    "closed",
                    "replaced",
                    "reaped_stale",
                    "dropped_broken",
                    "rejected_auth",
                    "refused_sockets",
                    "kept",
                    "resumed",
                    "resume_refused",
                )
            },
            # voice participants whose socket is gone, kept for a resume
            "kept_for_resume": [
                {
                    "peer_id": v.peer_id,
                    "user_id": v.user_id,
                    "channel": v.channel,
                    "lost_ago": round(time.monotonic() - (v.lost_at or 0.0), 3),
                }
                for v in self.voices.kept()
            ],
            "errors_by_code": dict(self.errors),
        }
