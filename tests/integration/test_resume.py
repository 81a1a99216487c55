"""Resuming after a dropped connection (contract 1.1), with real aiortc peers.

A socket cut underneath the client (no close frame) is resumed by the client
itself and the others notice nothing; a client whose socket and peer
connections are gone brings new ones (``media: "restart"``) under the same
publications, audio and screen alike; a grace that runs out ends in
``timeout``; tokens work once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from miscord_client.client import VoiceClient
from tests.diag_call import assert_consistent, finding, report, row
from tests.media import CounterScreen, ToneTrack, VideoWatcher
from tests.voice import Arrivals, Ears, server_counts, settle
from tests.wsclient import Ws

#: what the others must not see while a participant resumes
VISIBLE = ("participant_left", "participant_joined", "track_unpublished")


def cut(client: VoiceClient) -> None:
    """The client's TCP connection dies underneath (no close frame)."""
    assert client.ws is not None
    client.ws._writer.transport.abort()


def seen_since(client: VoiceClient, mark: int, *kinds: str) -> list[dict[str, Any]]:
    return [m for m in list(client.messages)[mark:] if m.get("type") in kinds]


async def test_a_cut_socket_resumes_and_the_others_notice_nothing(server, clients):
    alice = clients(server, "alice")
    await alice.join("room")
    await alice.publish(microphone=ToneTrack(440))
    arrivals = Arrivals()
    bob = VoiceClient(server.url, server.token("bob"), ["127.0.0.1"], raw_sink=arrivals)
    try:
        await bob.join("room")
        await bob.publish(microphone=ToneTrack(660))
        key = (alice.peer_id, "microphone")
        await settle(lambda: len(arrivals.times.get(key, ())) > 25)
        peer_id, token, mark = alice.peer_id, alice.resume_token, len(bob.messages)
        cut_at = time.monotonic()
        cut(alice)
        await alice.wait_for(lambda: alice.resumes == 1, timeout=10)
        print(f"\nresumed {time.monotonic() - cut_at:.3f} s after the cut")
        assert alice.peer_id == peer_id and alice.resume_token not in (None, token)
        # control works on the new socket
        await alice.mute("microphone", True)
        muted = await bob.wait_for_message(
            "track_muted", peer_id=peer_id, source="microphone", muted=True
        )
        assert muted
        await asyncio.sleep(max(0.0, cut_at + 2.0 - time.monotonic()))
        gap = arrivals.longest_gap(key, cut_at - 0.5)
        print(f"longest gap in alice's audio at bob: {gap * 1000:.0f} ms")
        assert gap < 0.3
        assert seen_since(bob, mark, *VISIBLE, "track_published") == []
        manager = server.services.manager
        assert manager.counters["kept"] == 1 and manager.counters["resumed"] == 1
        # support sees it resumed, and that it is no fault
        body = await report(server, peer_id)
        resumed = finding(body, "resumed")
        assert resumed["severity"] == "info" and resumed["evidence"]["resumes"] == 1
        assert_consistent(body)
        row("resumed after a cut socket", body)
        assert manager.voices.kept() == []
        # the token before the resume is spent
        stale = await Ws.open(server.url)
        await stale.send({"type": "resume", "resume_token": token, "media": "keep"})
        assert await stale.closed() == 4410
        await stale.close()
    finally:
        await bob.close()


async def test_a_restart_brings_new_peer_connections_under_the_same_publications(
    server, clients
):
    alice = clients(server, "alice", resume=False)
    bob = clients(server, "bob")
    await alice.join("room")
    await alice.publish(microphone=ToneTrack(440))
    await bob.join("room")
    await bob.publish(microphone=ToneTrack(660))
    ears = Ears(bob)
    await ears.hears(alice.peer_id, 440)
    before = {mid: r.track for mid, r in bob.remote.items()}
    peer_id, token, mark = alice.peer_id, alice.resume_token, len(bob.messages)
    offers = len(seen_since(bob, 0, "offer"))
    await alice.close()  # socket and peer connections gone, no leave
    await asyncio.sleep(3.0)

    again = clients(server, "alice")  # the same user on a new network
    resumed = await again.take_over(token, "restart")
    assert resumed["peer_id"] == peer_id and resumed["resume_token"] != token
    restarted = time.monotonic()
    await again.publish(microphone=ToneTrack(880))
    took = await ears.hears(peer_id, 880, timeout=5.0)
    print(f"\nthe new tone heard {time.monotonic() - restarted:.3f} s after resumed")
    assert took < 5.0
    # on the same subscription: no offer, no m-line or track change, nothing seen
    assert {mid: r.track for mid, r in bob.remote.items()} == before
    assert len(seen_since(bob, 0, "offer")) == offers
    assert seen_since(bob, mark, *VISIBLE, "track_published") == []
    # the restarted client hears bob on its new subscribe connection
    assert await Ears(again).hears(bob.peer_id, 660)
    assert server_counts(server.services)["participants"] == 2


async def test_a_screen_share_survives_a_restart_of_its_publisher(server, clients):
    alice = clients(server, "alice", resume=False)
    bob = clients(server, "bob")
    await alice.join("room")
    await alice.publish(microphone=ToneTrack(440), screen=CounterScreen())
    await bob.join("room")
    remote = await bob.wait_for_track(alice.peer_id, "screen", timeout=10)
    watcher = VideoWatcher(remote.track)
    await settle(lambda: len(watcher.frames) > 10, timeout=10)
    token, mark = alice.resume_token, len(bob.messages)
    await alice.close()
    await asyncio.sleep(1.0)
    stalled_at = len(watcher.frames)

    again = clients(server, "alice")
    await again.take_over(token, "restart")
    restarted = time.monotonic()
    await again.publish(microphone=ToneTrack(440), screen=CounterScreen())
    # the viewer's m-line gets the new uplink from a keyframe on
    await settle(lambda: len(watcher.frames) > stalled_at + 10, timeout=5)
    print(f"\nframes again {time.monotonic() - restarted:.3f} s after resumed")
    # the new screen's frames, in order (the old one's last frame may show once)
    counters = [c for _, c in watcher.frames[-10:]]
    assert counters == sorted(counters) and counters[-1] < 100, counters
    assert bob.remote.get(remote.mid) is remote
    assert seen_since(bob, mark, *VISIBLE, "track_published") == []
    await watcher.stop()


async def test_a_grace_that_runs_out_ends_in_timeout(start_server, clients):
    server = await start_server(resume_grace=1.0)
    alice = clients(server, "alice", resume=False)
    await alice.join("room")
    await alice.publish(microphone=ToneTrack(440))
    watcher = await Ws.open(server.url)
    await watcher.join(server.token("watcher"), kind="events")
    peer_id = alice.peer_id
    await alice.close()
    lost_at = time.monotonic()
    left = await watcher.expect("participant_left", timeout=5)
    waited = time.monotonic() - lost_at
    assert left == {"type": "participant_left", "peer_id": peer_id, "reason": "timeout"}
    assert 0.9 < waited < 2.0, waited
    counts = server_counts(server.services)
    assert counts["participants"] == 0 and counts["channels"] == 0
    assert server.services.manager.voices.by_peer == {}
    await watcher.close()


async def test_tokens_work_once_and_nothing_else_resumes(server):
    watcher = await Ws.open(server.url)
    await watcher.join(server.token("watcher"), kind="events")
    first = await Ws.open(server.url)
    joined = await first.join(server.token("alice"))
    peer_id, token = joined["peer_id"], joined["resume_token"]
    await watcher.expect("participant_joined")
    mark = len(watcher.seen)

    async def resume(token: Any) -> tuple[Ws, dict[str, Any] | int | None]:
        ws = await Ws.open(server.url)
        await ws.send({"type": "resume", "resume_token": token, "media": "keep"})
        try:
            return ws, await ws.recv()
        except ConnectionError:
            return ws, ws.ws.close_code

    for bad in ("x" * 43, "", 123, None):
        ws, outcome = await resume(bad)
        assert outcome == 4410, (bad, outcome)
        await ws.close()
    # the old socket is still open: the resume takes over, the old one gets 4001
    second, resumed = await resume(token)
    assert isinstance(resumed, dict) and resumed["peer_id"] == peer_id
    assert await first.closed() == 4001
    ws, outcome = await resume(token)  # used
    assert outcome == 4410
    await ws.close()
    # the rotated token works once the socket is gone
    await second.close()
    third, again = await resume(resumed["resume_token"])
    assert isinstance(again, dict) and again["peer_id"] == peer_id
    assert (await third.error({"type": "resume", "resume_token": "x"}))[
        "code"
    ] == "already_joined"
    assert await third.alive()
    # the watcher saw none of it
    assert await watcher.alive()
    assert [m["type"] for m in watcher.seen[mark:] if m["type"] in VISIBLE] == []
    await third.send({"type": "leave"})
    left = await watcher.expect("participant_left")
    assert left["reason"] == "left"
    for ws in (first, third, watcher):
        await ws.close()


async def test_a_client_whose_media_died_resumes_with_new_connections(server, clients):
    """Its publish connection is gone when its socket drops: it resumes with
    ``restart`` and publishes the same track again."""
    alice, bob = clients(server, "alice"), clients(server, "bob")
    for client, freq in ((alice, 440), (bob, 660)):
        await client.join("room")
        await client.publish(microphone=ToneTrack(freq))
    ears = Ears(bob)
    await ears.hears(alice.peer_id, 440)
    peer_id, mark = alice.peer_id, len(bob.messages)
    assert alice.publish_pc is not None
    await alice.publish_pc.close()  # gone under the client's feet...
    cut(alice)  # ...and its socket with it
    await alice.wait_for(lambda: alice.resumes == 1, timeout=10)
    assert server.services.manager.counters["resumed"] == 1
    assert alice.peer_id == peer_id and alice.rejoins == 0
    await asyncio.sleep(1.0)  # what bob heard before is out of the window
    await ears.hears(peer_id, 440)  # the same track, on the new connection
    assert await Ears(alice).hears(bob.peer_id, 660)
    assert seen_since(bob, mark, *VISIBLE, "track_published") == []


async def test_a_refused_resume_joins_afresh_and_a_leave_is_final(
    start_server, clients
):
    server = await start_server(resume_grace=0)  # nothing is kept
    alice, bob = clients(server, "alice"), clients(server, "bob")
    for client in (alice, bob):
        await client.join("room")
    await alice.publish(microphone=ToneTrack(440))
    ears = Ears(bob)
    await ears.hears(alice.peer_id, 440)
    old = alice.peer_id
    cut(alice)
    await alice.wait_for(lambda: alice.rejoins == 1, timeout=10)
    assert alice.peer_id != old and alice.resumes == 0
    assert server.services.manager.counters["resume_refused"] == 1
    await ears.hears(alice.peer_id, 440)  # published again by itself
    await alice.leave()
    await asyncio.sleep(1.0)
    assert alice.rejoins == 1 and alice.resumes == 0 and not alice.reconnecting
    assert server_counts(server.services)["participants"] == 1
