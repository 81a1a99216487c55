"""Two browsers and an aiortc participant in one channel all hear each other."""

from __future__ import annotations

import asyncio

import pytest

from tests.media import ABSENT, AudioRecorder, ToneTrack, tone_share, wait_for_tone

pytestmark = pytest.mark.browser


async def test_browsers_and_aiortc_hear_each_other(server, clients, open_page):
    alice, bob = await asyncio.gather(open_page("alice", 500), open_page("bob", 700))
    a_id, b_id = await asyncio.gather(
        alice.join("alice", "lounge"), bob.join("bob", "lounge")
    )

    # each browser receives the other: packets and audio energy rise
    await asyncio.gather(alice.wait_hearing(b_id), bob.wait_hearing(a_id))

    # an aiortc participant hears each browser's own tone on that browser's track
    carol = clients(server, "carol")
    await carol.join("lounge")
    await carol.publish(microphone=ToneTrack(900))
    from_alice = AudioRecorder((await carol.wait_for_track(a_id)).track)
    from_bob = AudioRecorder((await carol.wait_for_track(b_id)).track)
    try:
        await asyncio.gather(
            wait_for_tone(from_alice, 500), wait_for_tone(from_bob, 700)
        )
        assert tone_share(from_alice.last(0.5), 700) < ABSENT, "bob leaks into alice"
        assert tone_share(from_bob.last(0.5), 500) < ABSENT, "alice leaks into bob"
    finally:
        await asyncio.gather(from_alice.stop(), from_bob.stop())

    # and the browsers receive carol too; everyone is listed on both pages
    await asyncio.gather(
        alice.wait_hearing(carol.peer_id), bob.wait_hearing(carol.peer_id)
    )
    for page in (alice, bob):
        await page.wait_for(
            "() => document.querySelectorAll('#participant-list .participant')"
            ".length === 3"
        )
        names = await page.page.locator("#participant-list .name").all_inner_texts()
        assert sorted(n.removesuffix(" (you)") for n in names) == [
            "alice",
            "bob",
            "carol",
        ]

    # the periodic stats report goes out and the server accepts it
    report = await alice.stats()
    assert report["outbound"][0]["packetsSent"] > 0
    assert report["outbound"][0]["totalAudioEnergy"] > 0
    assert {i["peer_id"] for i in report["inbound"]} == {b_id, carol.peer_id}
    assert "publish" in report["candidatePair"]
    await alice.wait_for(
        "() => window.miscord.websocketService.get('voice').messagesOut >= 5"
    )
    for page in (alice, bob):
        info = await page.debug()
        assert info["websocket"]["voice"]["errors"] == [], page.dump()
        assert info["voice"]["errors"] == [], page.dump()
        assert page.errors == []
