"""Fixtures: a real server on 127.0.0.1 and real aiortc clients."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis  # noqa: F401  (imported early: its pytest plugin imports it
import pytest  # lazily at the end of a session, which trips a CPython 3.11.7 bug)
from aiohttp.test_utils import TestServer

from miscord_client.client import VoiceClient
from signaling import auth
from signaling.app import SERVICES, Services, create_app
from signaling.config import Settings
from tests.media import ToneTrack
from tests.turn import Coturn, spare_ports, start_coturn

SECRET = "test-secret-not-for-production-use-only"


@dataclass
class Server:
    url: str
    services: Services
    settings: Settings

    def token(
        self,
        user: str,
        channels: list[str] | None = None,
        role: str = "member",
        ttl: float = 600,
        can: list[str] | None = None,
    ) -> str:
        return auth.issue(
            SECRET, user, channels or ["*"], role=role, ttl=ttl, name=user, can=can
        )


def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "secret": SECRET,
        "host": "127.0.0.1",
        "port": 0,
        "heartbeat_interval": 1.0,
        "heartbeat_timeout": 5.0,
        "join_timeout": 3.0,
        "media_grace": 3.0,
        "media_silence": 3.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> Server:
        settings = test_settings(**overrides)
        app = create_app(settings)
        test_server = TestServer(app, host="127.0.0.1", port=0)
        await test_server.start_server()
        servers.append(test_server)
        return Server(
            str(test_server.make_url("")).rstrip("/"), app[SERVICES], settings
        )

    yield start
    for test_server in servers:
        await test_server.close()


@pytest.fixture
async def server(start_server: Callable[..., Awaitable[Server]]) -> Server:
    return await start_server()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., VoiceClient]]:
    made: list[VoiceClient] = []

    def make(
        server: Server,
        user: str,
        relay: bool = False,
        resume: bool = True,
        opus_fmtp: dict[str, int] | None = None,
        **token_args: Any,
    ) -> VoiceClient:
        client = VoiceClient(
            server.url,
            server.token(user, **token_args),
            ice_hosts=["127.0.0.1"],
            relay=relay,
            resume=resume,
            opus_fmtp=opus_fmtp,
        )
        made.append(client)
        return client

    yield make
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)
    gc.collect()


@pytest.fixture
async def tone_voices() -> AsyncIterator[Callable[..., Awaitable[VoiceClient]]]:
    """``join(url, token, channel, freq, **client_args)``: a client that
    joined and publishes a tone (servers in their own processes)."""
    made: list[VoiceClient] = []

    async def join(
        url: str, token: str, channel: str, freq: float, **client_args: Any
    ) -> VoiceClient:
        client = VoiceClient(url, token, ["127.0.0.1"], **client_args)
        made.append(client)
        await client.join(channel)
        await client.publish(microphone=ToneTrack(freq))
        return client

    yield join
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


@pytest.fixture
def coturn(tmp_path: Any) -> Iterator[Coturn]:
    """A real coturn on 127.0.0.1 (request it before the clients: they
    deallocate through it when they close)."""
    server = start_coturn(tmp_path, spare_ports(20))
    yield server
    server.stop()


@pytest.fixture
async def sockets() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    from tests.wsclient import Ws

    opened: list[Ws] = []

    async def open_ws(server: Server, **kwargs: Any) -> Ws:
        ws = await Ws.open(server.url, **kwargs)
        opened.append(ws)
        return ws

    yield open_ws
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
