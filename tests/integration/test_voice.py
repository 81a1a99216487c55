"""Voice channels with real aiortc participants over 127.0.0.1."""

import asyncio
import time

import pytest

from tests.media import ABSENT, ToneTrack
from tests.voice import (
    Ears,
    live_peer_connections,
    server_counts,
    settle,
    tone_participant,
)

TONES = {"alice": 440, "bob": 660, "carol": 880}


@pytest.mark.parametrize("forwarding", ["fast", "track"])
async def test_three_participants_hear_exactly_the_other_two(
    start_server, clients, forwarding
):
    server = await start_server(forwarding=forwarding)
    people = {
        user: await tone_participant(clients, server, user, freq)
        for user, freq in TONES.items()
    }
    for user, client in people.items():
        others = {people[o].peer_id for o in TONES if o != user}
        await client.wait_for(
            lambda c=client, o=others: {t.peer_id for t in c.remote.values()} == o
        )
        assert sorted((t.peer_id, t.source) for t in client.remote.values()) == sorted(
            (p, "microphone") for p in others
        )
    ears = {user: Ears(client) for user, client in people.items()}
    for user, ear in ears.items():
        for other, freq in TONES.items():
            if other != user:
                await ear.hears(people[other].peer_id, freq)
        # and never its own tone or a third one on a stream
        for other in TONES:
            if other != user:
                for freq in TONES.values():
                    if freq != TONES[other]:
                        assert ear.share(people[other].peer_id, freq) < ABSENT
    for ear in ears.values():
        await ear.stop()


async def test_late_joiner_hears_everyone_within_2s(server, clients):
    people = {
        user: await tone_participant(clients, server, user, freq)
        for user, freq in TONES.items()
    }
    late = clients(server, "dave")
    joined_at = time.monotonic()
    await late.join("room")
    await late.publish(microphone=ToneTrack(1000))
    ear = Ears(late)
    for user, freq in TONES.items():
        await ear.hears(people[user].peer_id, freq, timeout=2.0)
    assert time.monotonic() - joined_at < 2.0 + 0.6  # the last window of listening
    await ear.stop()


async def test_leaving_ends_subscriptions_and_releases_everything(server, clients):
    a = await tone_participant(clients, server, "alice", 440)
    b = await tone_participant(clients, server, "bob", 660)
    await a.wait_for_track(b.peer_id)
    await b.wait_for_track(a.peer_id)
    await asyncio.sleep(0.5)
    counts_before = server_counts(server.services)
    pcs_before = live_peer_connections()
    tasks_before = len(asyncio.all_tasks())

    c = await tone_participant(clients, server, "carol", 880)
    ears = Ears(a)
    await ears.hears(c.peer_id, 880)
    await b.wait_for_track(c.peer_id)
    assert server_counts(server.services) != counts_before
    peer_c = c.peer_id
    await c.leave()

    await a.wait_for(lambda: a.track_of(peer_c) is None)
    await b.wait_for(lambda: b.track_of(peer_c) is None)
    assert (await a.wait_for_message("participant_left", peer_id=peer_c))[
        "reason"
    ] == "left"
    await settle(lambda: server_counts(server.services)["participants"] == 2)
    await asyncio.sleep(1.0)
    after = server_counts(server.services)
    # the subscribers keep their (now inactive) m-line for reuse; nothing else remains
    assert {k: v for k, v in after.items() if k != "subscribe_downlinks"} == {
        k: v for k, v in counts_before.items() if k != "subscribe_downlinks"
    }
    assert after["subscribe_downlinks"] == counts_before["subscribe_downlinks"] + 2
    assert live_peer_connections() == pcs_before
    await ears.stop()
    # exactly two tasks more: the RTCP task of the receiver each remaining *client*
    # keeps for the inactive m-line it will reuse; nothing of the server's
    await settle(lambda: len(asyncio.all_tasks()) == tasks_before + 2)


async def test_mute_stops_the_tone_and_unmute_restores_it(server, clients):
    a = await tone_participant(clients, server, "alice", 440)
    b = await tone_participant(clients, server, "bob", 660)
    ears = Ears(b)
    await ears.hears(a.peer_id, 440)
    await a.mute("microphone", True)
    muted = await b.wait_for_message("track_muted", peer_id=a.peer_id)
    assert muted["muted"] is True
    await asyncio.sleep(0.8)
    assert ears.share(a.peer_id, 440, seconds=0.5) < ABSENT
    pub = server.services.sfu.participants[a.peer_id].publish.by_source("microphone")
    dropped = pub.dropped_muted
    await asyncio.sleep(0.3)
    assert pub.dropped_muted > dropped  # packets still arrive, the server drops them
    await a.mute("microphone", False)
    await b.wait_for_message("track_muted", peer_id=a.peer_id, muted=False)
    await ears.hears(a.peer_id, 440, timeout=2)
    assert [p for p in b.participants[a.peer_id]["tracks"]] == [
        {"source": "microphone", "muted": False}
    ]
    await ears.stop()


async def test_fifty_join_leave_cycles_leave_nothing_behind(server, clients):
    anchor = await tone_participant(clients, server, "anchor", 440)
    warmup = await tone_participant(clients, server, "warmup", 660)
    await warmup.wait_for_track(anchor.peer_id)
    await anchor.wait_for_track(warmup.peer_id)
    await settle(lambda: anchor.subscribe_pc.connectionState == "connected")
    await warmup.leave()
    await settle(lambda: server_counts(server.services)["participants"] == 1)
    await asyncio.sleep(0.5)
    pcs_before = live_peer_connections()
    tasks_before = len(asyncio.all_tasks())
    counts_before = server_counts(server.services)
    for i in range(50):
        visitor = await tone_participant(clients, server, f"visitor{i}", 660)
        await visitor.wait_for_track(anchor.peer_id)
        await visitor.leave()
    await settle(lambda: server_counts(server.services)["participants"] == 1)
    await asyncio.sleep(1.0)
    counts = server_counts(server.services)
    assert {k: v for k, v in counts.items() if k != "subscribe_downlinks"} == {
        k: v for k, v in counts_before.items() if k != "subscribe_downlinks"
    }
    assert counts["subscribe_downlinks"] <= 1  # the anchor's one reused m-line
    anchor_participant = server.services.sfu.participants[anchor.peer_id]
    assert len(anchor_participant.subscribe.pc.getTransceivers()) <= 1
    assert live_peer_connections() == pcs_before
    await settle(lambda: len(asyncio.all_tasks()) == tasks_before, timeout=5)


async def test_subscribe_sdp_does_not_grow_with_churn(server, clients):
    listener = clients(server, "listener")
    await listener.join("room")
    sizes = []
    for i in range(10):
        pair = [
            await tone_participant(clients, server, f"p{i}{j}", 500 + 100 * j)
            for j in range(2)
        ]
        for p in pair:
            await listener.wait_for_track(p.peer_id)
        sizes.append(len(listener.subscribe_pc.remoteDescription.sdp.split("m=")) - 1)
        for p in pair:
            await p.leave()
        await listener.wait_for(lambda: not listener.remote)
    assert max(sizes) == 2 and sizes == [2] * 10


async def test_offers_are_batched_while_one_is_outstanding(server, clients):
    listener = clients(server, "listener")
    await listener.join("room")
    first = await tone_participant(clients, server, "first", 440)
    await listener.wait_for_track(first.peer_id)
    participant = server.services.sfu.participants[listener.peer_id]
    offers_before = participant.subscribe.offers

    # hold the listener's answers: offers pile up only on the server side
    held = []
    original = listener._on_subscribe_offer

    async def hold(message):
        held.append(message)

    listener._on_subscribe_offer = hold
    others = [
        await tone_participant(clients, server, f"o{i}", 500 + 100 * i)
        for i in range(3)
    ]
    await asyncio.sleep(0.5)
    assert len(held) == 1 and participant.subscribe.offer_pending
    listener._on_subscribe_offer = original
    await original(held[0])
    await listener.wait_for(
        lambda: all(listener.track_of(o.peer_id) for o in others), timeout=5
    )
    assert (
        participant.subscribe.offers - offers_before == 2
    )  # one held, one batching the rest


async def test_server_answers_with_candidates_on_the_ice_host_only(server, clients):
    a = await tone_participant(clients, server, "alice", 440)
    sdp = a.publish_pc.remoteDescription.sdp
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates)


async def test_lifecycle_states_are_reported(server, clients):
    from sfu import events

    seen = []
    server.services.sfu.events.subscribe(
        lambda e: seen.append(e) if isinstance(e, events.StateChanged) else None
    )
    a = await tone_participant(clients, server, "alice", 440)
    participant = server.services.sfu.participants[a.peer_id]
    await settle(lambda: participant.state == "connected")
    await a.leave()
    await settle(lambda: participant.state == "closed")
    states = [e.state for e in seen if e.peer_id == a.peer_id]
    assert (
        states[0] == "connecting" and "connected" in states and states[-1] == "closed"
    )
