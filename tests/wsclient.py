"""A bare /ws client for signaling tests (no media)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class Ws:
    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse
    ):
        self.session = session
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Ws:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url.rstrip("/") + "/ws", **kwargs)
        return cls(session, ws)

    async def send(self, message: Any) -> None:
        await self.ws.send_str(
            message if isinstance(message, str) else json.dumps(message)
        )

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(
                f"got {msg.type} {msg.data} (close {self.ws.close_code})"
            )
        data = json.loads(msg.data)
        self.seen.append(data)
        return data

    async def expect(
        self, kind: str, timeout: float = 5.0, **fields: Any
    ) -> dict[str, Any]:
        """Read until a message of ``kind`` (with ``fields``) arrives."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            message = await self.recv(max(left, 0.01))
            if message.get("type") == kind and all(
                message.get(k) == v for k, v in fields.items()
            ):
                return message

    async def error(self, message: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Send ``message`` and return the error it caused."""
        await self.send(message)
        return await self.expect("error", timeout)

    async def join(
        self, token: str, channel: str = "room", kind: str = "voice"
    ) -> dict[str, Any]:
        await self.send(
            {"type": "join", "token": token, "channel": channel, "kind": kind}
        )
        return await self.expect("joined")

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; returns the close code."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data  # the code in the server's close frame
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.seen.append(json.loads(msg.data))

    async def alive(self) -> bool:
        await self.send({"type": "ping", "id": "alive"})
        return (await self.expect("pong", ref="alive"))["type"] == "pong"

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
