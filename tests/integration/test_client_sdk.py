"""``miscord_client.VoiceClient`` against a scripted server: what it makes of
messages that arrive together, as they do from a busy server."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCIceTransportPolicy

from miscord_client.client import VoiceClient
from miscord_client.rtc import private

TURN = {
    "urls": ["turn:127.0.0.1:3478?transport=udp"],
    "username": "2000000000:alice",
    "credential": "c2VjcmV0",
}


async def test_an_offer_right_after_joined_gets_the_joined_ice_servers():
    """The server's subscribe offer may be in the same read as ``joined``: the
    subscribe connection is made before ``join()`` resumes, and must already
    have the TURN server (relay-only: without it, it could not connect)."""
    offered = asyncio.Event()

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        join = await sock.receive_json()
        # both frames written before the client's loop runs again
        await sock.send_json(
            {
                "type": "joined",
                "ref": join["id"],
                "peer_id": "p1",
                "channel": "room",
                "participants": [],
                "ice_servers": [TURN],
            }
        )
        await sock.send_json(
            {"type": "offer", "pc": "subscribe", "sdp": "v=0\r\n", "tracks": {}}
        )
        offered.set()
        await sock.receive()
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    client = VoiceClient(str(server.make_url("")), "token", relay=True)
    try:
        joined = await client.join("room")
        await offered.wait()
        await client.wait_for(lambda: client.subscribe_pc is not None, timeout=5)
        assert joined["peer_id"] == client.peer_id == "p1"
        config = private(client.subscribe_pc, "RTCPeerConnection", "configuration")
        (given,) = config.iceServers
        assert (given.urls, given.username) == (TURN["urls"], TURN["username"])
        assert config.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    finally:
        await client.close()
        await server.close()
