"""The /ws protocol: validation, errors, close codes, limits (real sockets)."""

import asyncio
import json

import pytest

from signaling import protocol


async def test_join_then_ping(server, sockets):
    ws = await sockets(server)
    joined = await ws.join(server.token("alice"))
    assert joined["channel"] == "room" and joined["participants"] == []
    assert joined["peer_id"] and joined["ice_servers"] == []
    await ws.send({"type": "ping", "id": 7})
    assert await ws.expect("pong") == {"type": "pong", "ref": 7}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2, 3]", "bad_message"),
        ('"a string"', "bad_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"no_type": 1}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "mute", "source": "microphone"}', "bad_message"),
        ('{"type": "mute", "source": "microphone", "muted": "yes"}', "bad_message"),
        ('{"type": "mute", "source": "camera", "muted": true}', "bad_message"),
        ('{"type": "offer", "pc": "publish", "sdp": 3, "sources": {}}', "bad_message"),
        ('{"type": "candidate", "pc": "sideways", "candidate": null}', "bad_message"),
        (
            '{"type": "candidate", "pc": "publish", "candidate": {"sdpMid": "0"}}',
            "bad_message",
        ),
        (
            '{"type": "join", "token": "x", "channel": "room", "kind": "video"}',
            "bad_message",
        ),
        (
            '{"type": "join", "token": "x", "channel": "bad channel!", "kind": "voice"}',
            "bad_message",
        ),
        ('{"type": "ping", "id": {"nested": true}}', "bad_message"),
    ],
)
async def test_bad_input_gets_error_and_connection_serves(server, sockets, frame, code):
    ws = await sockets(server)
    await ws.join(server.token("alice"))
    error = await ws.error(frame)
    assert error["code"] == code, error
    assert error["message"]
    assert await ws.alive()


async def test_error_carries_ref(server, sockets):
    ws = await sockets(server)
    await ws.join(server.token("alice"))
    error = await ws.error({"type": "mute", "id": "m1", "source": "microphone"})
    assert error["ref"] == "m1" and "muted" in error["message"]


async def test_not_joined_and_already_joined(server, sockets):
    ws = await sockets(server)
    assert (await ws.error({"type": "mute", "source": "microphone", "muted": True}))[
        "code"
    ] == "not_joined"
    await ws.join(server.token("alice"))
    error = await ws.error(
        {
            "type": "join",
            "token": server.token("alice"),
            "channel": "room",
            "kind": "voice",
        }
    )
    assert error["code"] == "already_joined"
    assert await ws.alive()


async def test_binary_frame_and_too_large(server, sockets):
    ws = await sockets(server)
    await ws.join(server.token("alice"))
    await ws.ws.send_bytes(b"\x00\x01binary")
    assert (await ws.expect("error"))["code"] == "bad_message"
    # up to the limit is read; past it the frame is refused from its header
    limit = server.settings.max_message_bytes
    at_limit = json.dumps({"type": "ping", "id": "big", "pad": ""})
    at_limit = at_limit.replace(
        '"pad": ""', '"pad": "' + "x" * (limit - len(at_limit)) + '"'
    )
    assert len(at_limit.encode()) == limit
    await ws.send(at_limit)
    assert (await ws.expect("pong"))["ref"] == "big"
    await ws.send(json.dumps({"type": "ping", "pad": "x" * limit}))
    assert await ws.closed() == 1009


async def test_events_connection_carries_no_media(server, sockets):
    ws = await sockets(server)
    joined = await ws.join(server.token("watcher"), kind="events")
    assert joined["peer_id"] is None
    for message in (
        {"type": "offer", "pc": "publish", "sdp": "v=0", "sources": {}},
        {"type": "mute", "source": "microphone", "muted": True},
        {"type": "stats", "report": {}},
    ):
        error = await ws.error(message)
        assert error["code"] == "forbidden" and "no media" in error["message"]
    assert await ws.alive()


async def test_invalid_and_expired_tokens_close_4401(server, sockets):
    for token in ("not-a-jwt", server.token("alice", ttl=-10)):
        ws = await sockets(server)
        await ws.send(
            {"type": "join", "token": token, "channel": "room", "kind": "voice"}
        )
        assert await ws.closed() == 4401
    assert server.services.manager.counters["rejected_auth"] == 2


async def test_channel_not_allowed_gets_forbidden_and_4403(server, sockets):
    ws = await sockets(server)
    await ws.send(
        {
            "type": "join",
            "token": server.token("alice", channels=["other"]),
            "channel": "room",
            "kind": "voice",
        }
    )
    assert (await ws.expect("error"))["code"] == "forbidden"
    assert await ws.closed() == 4403


async def test_no_join_in_time_closes_4408(start_server, sockets):
    server = await start_server(join_timeout=0.5)
    ws = await sockets(server)
    assert await ws.closed(timeout=3) == 4408


async def test_leave_closes_1000(server, sockets):
    ws = await sockets(server)
    await ws.join(server.token("alice"))
    await ws.send({"type": "leave"})
    assert await ws.closed() == 1000


async def test_flood_is_rate_limited_then_closed_4429(start_server, sockets):
    server = await start_server(rate_limit=5, rate_burst=5, rate_strikes=10)
    ws = await sockets(server)
    await ws.join(server.token("flooder"))
    for i in range(40):
        await ws.send({"type": "ping", "id": i})
    assert await ws.closed() == 4429
    codes = [m.get("code") for m in ws.seen if m["type"] == "error"]
    assert codes and set(codes) == {"rate_limited"}
    assert server.services.manager.errors["rate_limited"] >= 10


async def test_rate_limited_connection_keeps_serving_below_strikes(
    start_server, sockets
):
    server = await start_server(rate_limit=5, rate_burst=5, rate_strikes=50)
    ws = await sockets(server)
    await ws.join(server.token("eager"))
    for i in range(12):
        await ws.send({"type": "ping", "id": i})
    codes = [(await ws.recv()).get("type") for _ in range(12)]
    assert "error" in codes
    await asyncio.sleep(1.2)  # the bucket refills
    assert await ws.alive()


async def test_channel_full(start_server, sockets):
    server = await start_server(max_participants=2)
    for user in ("a", "b"):
        await (await sockets(server)).join(server.token(user))
    ws = await sockets(server)
    await ws.send(
        {"type": "join", "token": server.token("c"), "channel": "room", "kind": "voice"}
    )
    error = await ws.expect("error")
    assert error["code"] == "channel_full" and "2" in error["message"]
    # still open and may join elsewhere
    await ws.join(server.token("c"), channel="other")


async def test_too_many_channels(start_server, sockets):
    server = await start_server(max_channels=1)
    await (await sockets(server)).join(server.token("a"), channel="one")
    ws = await sockets(server)
    await ws.send(
        {"type": "join", "token": server.token("b"), "channel": "two", "kind": "voice"}
    )
    assert (await ws.expect("error"))["code"] == "channel_full"
    await ws.join(server.token("b"), channel="one")


async def test_internal_error_is_reported_and_connection_serves(server, sockets):
    ws = await sockets(server)
    await ws.join(server.token("alice"))
    participant = next(iter(server.services.sfu.participants.values()))

    def broken(source, muted):
        raise RuntimeError("injected fault")

    participant.set_muted = broken  # a fault in our own code, not in a library
    error = await ws.error(
        {"type": "mute", "source": "microphone", "muted": True, "id": 3}
    )
    assert error == {
        "type": "error",
        "code": "internal",
        "message": "the server failed to handle mute",
        "ref": 3,
    }
    assert await ws.alive()


async def test_every_contract_error_code_is_known():
    assert set(protocol.ERROR_CODES) == {
        "bad_json",
        "bad_message",
        "unknown_type",
        "not_joined",
        "already_joined",
        "forbidden",
        "bad_sdp",
        "rate_limited",
        "too_large",
        "channel_full",
        "no_ports",
        "internal",
    }
