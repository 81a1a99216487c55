"""Permissions (contract 1.1): the token's ``can`` claim, enforced with real
aiortc peers. A source the token may not publish is refused at ``offer`` time
(``forbidden``, nothing applies, the connection stays); without ``listen`` the
subscribe connection carries no media."""

from __future__ import annotations

import asyncio

import pytest

from miscord_client.client import ServerError
from tests.diag_call import fetch
from tests.media import CounterScreen, ToneTrack
from tests.voice import Ears, tone_participant


async def test_a_listen_only_token_is_refused_a_microphone_and_still_hears(
    server, clients
):
    bob = await tone_participant(clients, server, "bob", 660)
    alice = clients(server, "alice", can=["listen"])
    await alice.join("room")
    with pytest.raises(ServerError) as refused:
        await alice.publish(microphone=ToneTrack(440))
    assert refused.value.code == "forbidden"
    assert "microphone" in refused.value.message["message"]
    assert (await alice.ping())["type"] == "pong"  # the connection stays
    participant = server.services.sfu.participants[alice.peer_id]
    assert participant.publish.publications == {}  # nothing of the offer applied
    assert await Ears(alice).hears(bob.peer_id, 660)


async def test_a_speak_only_token_is_heard_and_receives_nothing(server, clients):
    bob = await tone_participant(clients, server, "bob", 660)
    alice = await tone_participant(clients, server, "alice", 440, can=["speak"])
    assert await Ears(bob).hears(alice.peer_id, 440)
    await asyncio.sleep(1.0)
    assert alice.remote == {}  # no m-line carries anything to her
    participant = server.services.sfu.participants[alice.peer_id]
    assert participant.subscribe.downlinks == []


async def test_a_screen_is_refused_without_the_screen_right(server, clients):
    alice = await tone_participant(
        clients, server, "alice", 440, can=["speak", "listen"]
    )
    bob = await tone_participant(clients, server, "bob", 660)
    ears = Ears(bob)
    assert await ears.hears(alice.peer_id, 440)
    with pytest.raises(ServerError) as refused:
        await alice.publish(screen=CounterScreen())
    assert refused.value.code == "forbidden" and "screen" in str(refused.value)
    await asyncio.sleep(0.6)
    assert await ears.hears(alice.peer_id, 440)  # her microphone goes on
    assert (
        "screen"
        not in server.services.sfu.participants[alice.peer_id].publish.publications
    )


# --- moderation (admin) -------------------------------------------------------------


def moderate(peer_id: str, action: str, channel: str = "room") -> str:
    return f"/api/channels/{channel}/participants/{peer_id}/{action}"


async def test_only_admins_moderate_and_support_lists_channels(server, clients):
    alice = await tone_participant(clients, server, "alice", 440)
    for who in ("support", "member", None):
        status, _ = await fetch(
            server, moderate(alice.peer_id, "kick"), who, method="POST"
        )
        assert status == (401 if who is None else 403), who
    status, listed = await fetch(server, "/api/channels", "support")
    assert status == 200
    assert [
        (c["channel"], [p["peer_id"] for p in c["participants"]]) for c in listed
    ] == [("room", [alice.peer_id])]
    assert (await fetch(server, "/api/channels", "member"))[0] == 403
    status, _ = await fetch(server, moderate("nobody", "kick"), "admin", method="POST")
    assert status == 404
    status, _ = await fetch(
        server, moderate(alice.peer_id, "kick", "elsewhere"), "admin", method="POST"
    )
    assert status == 404


async def test_kick_closes_4003_and_the_others_see_kicked(server, clients):
    alice = await tone_participant(clients, server, "alice", 440)
    bob = await tone_participant(clients, server, "bob", 660)
    ears = Ears(bob)
    assert await ears.hears(alice.peer_id, 440)
    status, body = await fetch(
        server, moderate(alice.peer_id, "kick"), "admin", method="POST"
    )
    assert status == 200 and body == {"peer_id": alice.peer_id, "kicked": True}
    assert await alice.wait_closed(timeout=5) == 4003
    left = await bob.wait_for_message("participant_left", peer_id=alice.peer_id)
    assert left["reason"] == "kicked"
    assert alice.peer_id not in server.services.sfu.participants
    assert server.services.manager.voices.by_peer.keys() == {bob.peer_id}
    await asyncio.sleep(1.0)  # her media stopped: nothing of her tone since
    assert ears.share(alice.peer_id, 440, seconds=0.5) < 0.1


async def test_server_mute_silences_refuses_self_unmute_and_admin_unmutes(
    server, clients
):
    alice = await tone_participant(clients, server, "alice", 440)
    bob = await tone_participant(clients, server, "bob", 660)
    ears = Ears(bob)
    assert await ears.hears(alice.peer_id, 440)
    path = moderate(alice.peer_id, "mute")

    async def admin_mute(body: object) -> int:
        return (await fetch(server, path, "admin", method="POST", json=body))[0]

    assert await admin_mute({"source": "microphone", "muted": True}) == 200
    for client in (alice, bob):  # everyone, the peer included, is told
        told = await client.wait_for_message(
            "track_muted", peer_id=alice.peer_id, muted=True
        )
        assert told["by"] == "server"
    await asyncio.sleep(1.0)  # within 1 s the tone is gone from bob's audio
    assert ears.share(alice.peer_id, 440, seconds=0.5) < 0.1
    with pytest.raises(ServerError) as refused:
        await alice.request({"type": "mute", "source": "microphone", "muted": False})
    assert refused.value.code == "forbidden"
    assert await admin_mute({"source": "microphone", "muted": False}) == 200
    assert await ears.hears(alice.peer_id, 440)
    # a source it does not publish, and a bad body
    assert await admin_mute({"source": "screen", "muted": True}) == 404
    assert await admin_mute({"muted": 1}) == 400


async def test_an_admin_unmute_leaves_the_peers_own_mute(server, clients):
    alice = await tone_participant(clients, server, "alice", 440)
    bob = await tone_participant(clients, server, "bob", 660)
    ears = Ears(bob)
    assert await ears.hears(alice.peer_id, 440)
    await alice.mute("microphone", True)  # her own
    path = moderate(alice.peer_id, "mute")
    for muted in (True, False):
        status, _ = await fetch(
            server,
            path,
            "admin",
            method="POST",
            json={"source": "microphone", "muted": muted},
        )
        assert status == 200

    def told() -> list[bool]:
        return [
            m["muted"]
            for m in bob.messages
            if m["type"] == "track_muted" and m.get("by") == "server"
        ]

    # the admin's unmute is told, with the state that holds: still muted (hers)
    await bob.wait_for(lambda: len(told()) == 2)
    assert told() == [True, True]
    await asyncio.sleep(1.0)
    assert ears.share(alice.peer_id, 440, seconds=0.5) < 0.1
    await alice.mute("microphone", False)
    assert await ears.hears(alice.peer_id, 440)
