"""Permissions (contract 1.1): the token's ``can`` claim, enforced with real
aiortc peers. A source the token may not publish is refused at ``offer`` time
(``forbidden``, nothing applies, the connection stays); without ``listen`` the
subscribe connection carries no media."""

from __future__ import annotations

import asyncio

import pytest

from miscord_client.client import ServerError
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
