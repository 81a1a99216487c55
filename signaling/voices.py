"""Voice participants kept across sockets (contract 1.1: resuming).

A ``Voice`` is a voice participant as signaling knows it: who it is, the
socket that carries it now (or none), and its resume token. When that socket
is lost without ``leave`` (it broke, its heartbeat stopped, it closed), the
participant is kept for ``resume_grace`` seconds with its media flowing; a new
socket's ``resume`` with the token takes it over, and only a grace that runs
out ends it (``participant_left`` ``timeout``). Tokens are random, work once
and are kept only as digests; each ends with ``.CHANNEL`` so that a front
relaying sockets to workers or nodes knows where to send a ``resume``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from diagnostics import logs
from sfu.tasks import TaskGroup

if TYPE_CHECKING:
    from sfu.participant import Participant

log = logs.get("voice")


def channel_of(token: str) -> str:
    """The channel a resume token is for: what a front routes a ``resume`` by
    (the token's secret part is random; this part only says where to look)."""
    return token.partition(".")[2]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Socket(Protocol):
    """What a voice needs of the connection carrying it (``connections``)."""

    id: str
    user_id: str | None
    name: str | None
    role: str | None
    channel: str | None


@dataclass(eq=False)
class Voice:
    participant: Participant
    user_id: str
    name: str
    role: str
    channel: str
    #: the socket carrying it (None while kept for a resume)
    conn: Socket | None
    #: digest of the one token a resume may use now
    token: str = ""
    #: when its socket was lost (monotonic), while kept
    lost_at: float | None = None
    grace: asyncio.Task[None] | None = field(default=None, repr=False)
    ended: bool = False

    @property
    def peer_id(self) -> str:
        return self.participant.peer_id


class Voices:
    """Every voice participant by peer id, user and token, and the grace
    timers of those kept. ``leave_media`` ends a participant in the media core
    (``SfuServer.leave``)."""

    def __init__(
        self,
        grace: float,
        leave_media: Callable[[Participant, str], Awaitable[None]],
    ) -> None:
        self.grace = grace
        self.leave_media = leave_media
        self.by_peer: dict[str, Voice] = {}
        self.by_user: dict[str, Voice] = {}
        self._tokens: dict[str, Voice] = {}
        self.tasks = TaskGroup("voices")
        self.resumed = 0
        self.expired = 0
        #: set while there is no voice participant (a drain waits for it)
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, conn: Socket, participant: Participant) -> tuple[Voice, str]:
        assert conn.user_id is not None and conn.channel is not None
        voice = Voice(
            participant,
            conn.user_id,
            conn.name or conn.user_id,
            conn.role or "member",
            conn.channel,
            conn,
        )
        self.by_peer[voice.peer_id] = voice
        self.by_user[voice.user_id] = voice
        self.empty.clear()
        return voice, self.new_token(voice)

    def new_token(self, voice: Voice) -> str:
        """A fresh token for ``voice``; the one before stops working."""
        self._tokens.pop(voice.token, None)
        token = f"{secrets.token_urlsafe(32)}.{voice.channel}"
        voice.token = _digest(token)
        self._tokens[voice.token] = voice
        return token

    def find(self, token: str) -> Voice | None:
        """The voice ``token`` resumes now (None: unknown, used — each resume
        issues the next — or its voice has ended)."""
        voice = self._tokens.get(_digest(token)) if token else None
        return None if voice is None or voice.ended else voice

    def kept(self) -> list[Voice]:
        return [v for v in self.by_peer.values() if v.conn is None]

    def lose(self, voice: Voice) -> None:
        """Its socket is gone: keep it for the grace, then end it."""
        voice.conn = None
        voice.lost_at = time.monotonic()
        log.info(
            "%s lost its socket: kept %.0f s for a resume", voice.peer_id, self.grace
        )
        voice.grace = self.tasks.spawn(self._expire(voice), f"grace:{voice.peer_id}")

    async def _expire(self, voice: Voice) -> None:
        await asyncio.sleep(self.grace)
        voice.grace = None  # this task ends the voice: end() must not cancel it
        self.expired += 1
        log.warning("%s was not resumed within %.0f s", voice.peer_id, self.grace)
        await self.end(voice, "timeout")

    def attach(self, voice: Voice, conn: Socket) -> None:
        """A resume took it over on ``conn``."""
        if voice.grace is not None:
            voice.grace.cancel()
            voice.grace = None
        voice.conn, voice.lost_at = conn, None
        self.resumed += 1

    async def end(self, voice: Voice, reason: str) -> None:
        """End it for good (idempotent): out of every index, then out of the
        media core (which tells the channel ``participant_left``)."""
        if voice.ended:
            return
        voice.ended = True
        if voice.grace is not None:
            voice.grace.cancel()
            voice.grace = None
        self._tokens.pop(voice.token, None)
        if self.by_peer.get(voice.peer_id) is voice:
            del self.by_peer[voice.peer_id]
        if self.by_user.get(voice.user_id) is voice:
            del self.by_user[voice.user_id]
        if not self.by_peer:
            self.empty.set()
        voice.conn = None
        await self.leave_media(voice.participant, reason)

    async def close(self) -> None:
        await asyncio.gather(
            *(self.end(v, "left") for v in list(self.by_peer.values())),
            return_exceptions=True,
        )
        await self.tasks.close()
