"""One /ws connection: read frames, validate them, act, reply.

Messages of one connection are handled strictly in order. A bad message gets an
``error`` and the connection keeps serving; only auth failures (4401/4403),
a missing join (4408) and repeated flooding (4429) close it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from diagnostics import logs
from miscord_client.protocol import IceServer
from sfu.errors import MediaError

from . import auth, protocol, turn
from .connections import ERROR, LEFT, REPLACED, Connection
from .protocol import Close, ProtocolError
from .ratelimit import RateLimiter
from .services import Services, services_of

log = logs.get("websocket")
voice_log = logs.get("voice")

NO_MEDIA = "events connections carry no media"


class Session:
    def __init__(self, services: Services, conn: Connection) -> None:
        self.services = services
        self.conn = conn
        self.manager = services.manager
        settings = services.settings
        self.limiter = RateLimiter(
            settings.rate_limit, settings.rate_burst, settings.rate_strikes
        )
        self.handlers: dict[str, Callable[[Any, Any], Awaitable[None]]] = {
            "offer": self._offer,
            "answer": self._answer,
            "candidate": self._candidate,
            "mute": self._mute,
            "leave": self._leave,
            "ping": self._ping,
            "stats": self._stats,
        }

    # --- the read loop ------------------------------------------------------------

    async def run(self) -> None:
        conn, ws = self.conn, self.conn.ws
        logs.about(socket=conn.id)
        deadline = time.monotonic() + self.services.settings.join_timeout
        reason = ERROR
        try:
            while not conn.closing:
                timeout = None if conn.joined else deadline - time.monotonic()
                try:
                    msg = await ws.receive(timeout=timeout)
                except TimeoutError:
                    await self.manager.end(conn, LEFT, Close.TIMEOUT, "no join in time")
                    return
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING):
                    reason = LEFT
                    break
                if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                conn.last_activity = time.monotonic()
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await self._frame(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._frame(None, len(msg.data))
        finally:
            # without leave (which ended it already): a voice participant is kept
            await self.manager.lose(conn, reason, Close.NORMAL)

    async def _frame(self, text: str | None, size: int = 0) -> None:
        conn = self.conn
        size = len(text.encode()) if text is not None else size
        conn.messages_in += 1
        conn.bytes_in += size
        if not self.limiter.allow():
            self.error(protocol.RATE_LIMITED, "too many messages: slow down")
            if self.limiter.abusive:
                await self.manager.end(
                    conn, ERROR, Close.RATE_LIMITED, "rate limit exceeded repeatedly"
                )
            return
        if text is None:
            self.error(
                protocol.BAD_MESSAGE, "binary frames are not accepted: send JSON text"
            )
            return
        try:
            envelope = protocol.parse(text)
        except ProtocolError as exc:
            self.error(exc.code, exc.message, exc.ref)
            return
        await self._dispatch(envelope)

    async def _dispatch(self, envelope: protocol.Envelope) -> None:
        ref = envelope.ref
        try:
            if envelope.type == "join":
                await self._join(envelope.body, ref)  # type: ignore[arg-type]
            elif envelope.type == "resume":
                await self._resume(envelope.body, ref)  # type: ignore[arg-type]
            elif not self.conn.joined and envelope.type != "ping":
                raise ProtocolError(protocol.NOT_JOINED, "send join first", ref)
            else:
                await self.handlers[envelope.type](envelope.body, ref)
        except ProtocolError as exc:
            self.error(exc.code, exc.message, ref)
        except MediaError as exc:
            self.error(exc.code, exc.message, ref)
        except Exception:
            log.exception(
                "handling %s on socket %s failed", envelope.type, self.conn.id
            )
            self.error(
                protocol.INTERNAL, f"the server failed to handle {envelope.type}", ref
            )

    def send(self, message: protocol.ServerMessage) -> None:
        self.manager.send(self.conn, message)

    def error(self, code: str, message: str, ref: Any = None) -> None:
        self.manager.errors[code] += 1
        level = logging.ERROR if code == protocol.INTERNAL else logging.WARNING
        log.log(
            level,
            "socket %s (%s %s): %s: %s",
            self.conn.id,
            self.conn.user_id,
            self.conn.peer_id,
            code,
            message,
        )
        diagnostics = self.services.diagnostics
        if diagnostics is not None and self.conn.peer_id is not None:
            diagnostics.note(
                self.conn.peer_id, "error", code=code, message=message[:200]
            )
        self.send(protocol.error(code, message, ref))

    # --- join -----------------------------------------------------------------------

    async def _join(self, join: protocol.Join, ref: Any) -> None:
        conn, manager = self.conn, self.manager
        started = time.monotonic()
        if await self._refused(ref):
            return
        try:
            claims = auth.verify(self.services.settings.secret, join.token)
        except auth.AuthError as exc:
            manager.counters["rejected_auth"] += 1
            await manager.end(conn, ERROR, Close.UNAUTHORIZED, str(exc))
            return
        if not claims.may_join(join.channel):
            manager.counters["rejected_auth"] += 1
            self.error(
                protocol.FORBIDDEN, f"token does not allow channel {join.channel}", ref
            )
            await manager.end(conn, ERROR, Close.FORBIDDEN, "channel not allowed")
            return
        async with manager.user_lock(claims.user_id, join.kind):
            old = manager.current(claims.user_id, join.kind)
            if old is not None:
                log.info(
                    "%s opened a newer %s connection: replacing socket %s",
                    claims.user_id,
                    join.kind,
                    old.id,
                )
                await manager.replace(old)
            kept = manager.voices.by_user.get(claims.user_id)
            if join.kind == "voice" and kept is not None:
                # kept for a resume that a fresh join supersedes
                await manager.voices.end(kept, REPLACED)
            if conn.closing:
                return
            participant = None
            if join.kind == "voice":
                participant = await self.services.sfu.join(
                    join.channel, claims.user_id, claims.name, claims.can
                )
            conn.user_id, conn.name, conn.role = (
                claims.user_id,
                claims.name,
                claims.role,
            )
            conn.channel, conn.kind, conn.participant = (
                join.channel,
                join.kind,
                participant,
            )
            conn.peer_id = participant.peer_id if participant else None
            manager.register(conn)
            self._about()
            token = None
            if participant is not None:
                conn.voice, token = manager.voices.add(conn, participant)
        self._welcome("joined", ref, token)
        manager.join_seconds.observe(time.monotonic() - started)
        if participant is not None:
            self.services.sfu.start_media(participant)

    async def _resume(self, resume: protocol.Resume, ref: Any) -> None:
        """Take over a kept participant (contract 1.1): the token works once;
        ``restart`` brings new peer connections under the same publications."""
        conn, manager = self.conn, self.manager
        if await self._refused(ref):
            return
        voice = manager.voices.find(resume.token)
        if voice is None:
            await self._refuse_resume()
            return
        async with manager.user_lock(voice.user_id, "voice"):
            if manager.voices.find(resume.token) is not voice:
                await self._refuse_resume()  # used meanwhile, or ended
                return
            old = manager.live.get(voice.conn.id) if voice.conn else None
            if old is not None:
                log.info(
                    "%s resumes on socket %s: closing socket %s",
                    voice.peer_id,
                    conn.id,
                    old.id,
                )
                await manager.hand_over(old)
            manager.voices.attach(voice, conn)
            participant = voice.participant
            if resume.media == "restart":
                # before the socket is registered: nothing of the old
                # connections' negotiation reaches it
                await participant.restart_media(manager.voices.grace)
            if conn.closing or voice.ended:
                if not voice.ended:
                    manager.voices.lose(voice)  # the token still works
                return
            conn.user_id, conn.name, conn.role = voice.user_id, voice.name, voice.role
            conn.channel, conn.kind = voice.channel, "voice"
            conn.participant, conn.voice = participant, voice
            conn.peer_id = voice.peer_id
            manager.register(conn)
            self._about()
            token = manager.voices.new_token(voice)
        manager.counters["resumed"] += 1
        voice_log.info("%s resumed (%s media)", voice.peer_id, resume.media)
        self._welcome("resumed", ref, token)
        diagnostics = self.services.diagnostics
        if diagnostics is not None:
            diagnostics.note(voice.peer_id, "resumed", media=resume.media)
        participant.timed_out = False  # failed media is reported again
        participant.subscribe.offer_again()

    async def _refuse_resume(self) -> None:
        self.manager.counters["resume_refused"] += 1
        await self.manager.end(
            self.conn,
            ERROR,
            Close.RESUME_REFUSED,
            "unknown, used or expired resume token: join afresh",
        )

    async def _refused(self, ref: Any) -> bool:
        """Whether this join or resume is refused: a second one on a joined
        socket is an error; during a drain the socket is closed 1013."""
        if self.conn.joined:
            raise ProtocolError(
                protocol.ALREADY_JOINED, "this connection has joined", ref
            )
        if not self.manager.draining:
            return False
        await self.manager.end(
            self.conn, LEFT, Close.TRY_AGAIN_LATER, "draining: try again later"
        )
        return True

    def _about(self) -> None:
        """Whom this socket's log lines are about, from now on (logs.about)."""
        conn = self.conn
        logs.about(user_id=conn.user_id, channel=conn.channel, peer_id=conn.peer_id)

    def _welcome(self, kind: str, ref: Any, token: str | None) -> None:
        """``joined`` or ``resumed``: who is in the channel, the ICE servers,
        and (voice) the token a resume takes."""
        conn = self.conn
        assert conn.channel is not None and conn.user_id is not None
        message: dict[str, Any] = {
            "type": kind,
            "ref": ref,
            "peer_id": conn.peer_id,
            "channel": conn.channel,
            "participants": self.services.participants_of(
                conn.channel, exclude=conn.peer_id
            ),
            "ice_servers": self._ice_servers(conn.user_id) if token else [],
        }
        if token is not None:
            message["resume_token"] = token
        self.send(message)  # type: ignore[arg-type]

    def _ice_servers(self, user_id: str) -> list[IceServer]:
        settings = self.services.settings
        return turn.ice_servers(
            settings.turn_urls, settings.turn_secret, settings.turn_ttl, user_id
        )

    # --- media ----------------------------------------------------------------------

    def _participant(self, ref: Any) -> Any:
        if self.conn.participant is None:
            raise ProtocolError(protocol.FORBIDDEN, NO_MEDIA, ref)
        return self.conn.participant

    async def _offer(self, offer: protocol.Offer, ref: Any) -> None:
        participant = self._participant(ref)
        if offer.pc != "publish":
            raise ProtocolError(
                protocol.BAD_MESSAGE,
                "only the server offers on the subscribe connection: answer its offer",
                ref,
            )
        answer = await participant.publish_offer(offer.sdp, offer.sources)
        self.send({"type": "answer", "ref": ref, "pc": "publish", "sdp": answer})

    async def _answer(self, answer: protocol.Answer, ref: Any) -> None:
        participant = self._participant(ref)
        if answer.pc != "subscribe":
            raise ProtocolError(
                protocol.BAD_MESSAGE,
                "the client offers on the publish connection; the server answers it",
                ref,
            )
        await participant.subscribe_answer(answer.sdp)

    async def _candidate(self, candidate: protocol.Candidate, ref: Any) -> None:
        participant = self._participant(ref)
        await participant.add_candidate(candidate.pc, candidate.candidate)

    async def _mute(self, mute: protocol.Mute, ref: Any) -> None:
        self._participant(ref).set_muted(mute.source, mute.muted)

    async def _leave(self, leave: protocol.Leave, ref: Any) -> None:
        voice_log.info("%s leaves %s", self.conn.user_id, self.conn.channel)
        await self.manager.end(self.conn, LEFT, Close.NORMAL, "left")

    async def _ping(self, ping: protocol.Ping, ref: Any) -> None:
        self.send({"type": "pong", "ref": ref})

    async def _stats(self, stats: protocol.Stats, ref: Any) -> None:
        participant = self._participant(ref)
        diagnostics = self.services.diagnostics
        if diagnostics is not None:
            try:
                diagnostics.client_report(participant.peer_id, stats.report)
            except ValueError as exc:
                # diagnostics may name the contract code (too_large, rate_limited)
                code = getattr(exc, "code", protocol.BAD_MESSAGE)
                raise ProtocolError(code, str(exc), ref) from None


def client_address(
    request: web.Request, trusted_proxies: list[str], secret: str
) -> str:
    """The client's address: the peer's; the one a front or another node
    relaying the socket signed (``auth.RELAYED_FOR``); or, when the peer is a
    trusted reverse proxy, the address that proxy appended to X-Forwarded-For."""
    relayed = auth.relayed_for(secret, request.headers.get(auth.RELAYED_FOR, ""))
    if relayed is not None:
        return relayed
    remote = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if remote in trusted_proxies and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return remote


def client_socket(max_message_bytes: int) -> web.WebSocketResponse:
    """A client's WebSocket: pings answered by the session (its activity),
    frames over the limit refused from their header before they are read
    (close 1009: aiohttp's check is >=, the contract's limit inclusive)."""
    return web.WebSocketResponse(
        autoping=False, max_msg_size=max_message_bytes + 1, timeout=2.0, compress=False
    )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
    manager, settings = services.manager, services.settings
    remote = client_address(request, settings.trusted_proxies, settings.secret)
    refused = manager.admit(remote)
    if refused is not None:
        manager.counters["refused_sockets"] += 1
        log.warning("refused a socket: %s", refused)
        raise web.HTTPTooManyRequests(
            text=json.dumps({"error": f"too many sockets: {refused}"}),
            content_type="application/json",
        )
    ws = client_socket(settings.max_message_bytes)
    await ws.prepare(request)
    conn = manager.open(ws, request, remote)
    await Session(services, conn).run()
    return ws
