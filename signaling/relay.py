"""One client socket relayed by a front to the worker (or node) holding its
channel.

The front reads the first message itself: a ``join`` names the channel, a
``resume`` token ends with it (``voices.channel_of``). From then on frames
pass both ways untouched (text, ping, pong, close with its code), so the
worker's session does everything a single process does: auth, rate limits,
heartbeats, resume. The packets of the call never pass here: the client's ICE
candidates are the worker's own sockets. An upstream that ends without a close
frame (the worker died, the node is gone) closes the client with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType, web

from diagnostics import logs
from miscord_client.protocol import Close

from . import auth

if TYPE_CHECKING:
    from .targets import Target

log = logs.get("websocket")

LOST = "the worker holding this channel's media died; join again"
CONNECT = 5.0  # seconds to reach a worker or node (a vanished machine: never)


@dataclass(eq=False)
class Relay:
    ws: web.WebSocketResponse
    remote: str
    channel: str = ""
    #: (user, kind) of a join the front could read; None for a resume
    user: tuple[str, str] | None = None
    target: Target | None = None
    upstream: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, target: Target, secret: str, first: str) -> None:
        """Open the upstream socket and send it the client's first message."""
        self.target = target
        self.upstream = await asyncio.wait_for(
            target.http.ws_connect(
                target.ws_url,
                autoping=False,
                autoclose=False,
                max_msg_size=0,
                headers={auth.RELAYED_FOR: auth.relay_stamp(secret, self.remote)},
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            ),
            CONNECT,
        )
        await self.upstream.send_str(first)

    async def pump(self) -> None:
        """Frames both ways until either side ends; then both are closed."""
        upstream, ws = self.upstream, self.ws
        assert upstream is not None
        pumps = [
            asyncio.create_task(_pipe(upstream, ws, self._upstream_ended)),
            asyncio.create_task(_pipe(ws, upstream, self._client_ended)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await upstream.close()
            if not ws.closed:
                await ws.close(code=Close.MEDIA_LOST, message=LOST.encode())

    async def _upstream_ended(self, msg: aiohttp.WSMessage) -> None:
        """Its close code goes to the client; no close frame: it is gone."""
        if msg.type == WSMsgType.CLOSE:
            await self.ws.close(code=msg.data, message=(msg.extra or "").encode())
            return
        log.warning("socket to %s broke: closing 1011", self.target)
        await self.ws.close(code=Close.MEDIA_LOST, message=LOST.encode())

    async def _client_ended(self, msg: aiohttp.WSMessage) -> None:
        """The client closed (its code goes on) or broke."""
        assert self.upstream is not None
        code = msg.data if msg.type == WSMsgType.CLOSE else Close.GOING_AWAY
        with contextlib.suppress(ConnectionError):
            await self.upstream.close(code=code)

    async def end(self, code: int, reason: str) -> None:
        """Close the client's socket (the pumps then close the upstream)."""
        await self.ws.close(code=code, message=reason.encode())


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pipe(
    source: Socket, sink: Socket, ended: Callable[[aiohttp.WSMessage], Awaitable[None]]
) -> None:
    """Every frame of ``source`` to ``sink``, until ``source`` ends."""
    while True:
        msg = await source.receive()
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await sink.pong(msg.data)
        else:
            await ended(msg)
            return
