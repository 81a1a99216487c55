"""Two browsers and an aiortc participant in one channel all hear each other."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.media import ABSENT, AudioRecorder, ToneTrack, tone_share, wait_for_tone

pytestmark = pytest.mark.browser


async def test_browsers_and_aiortc_hear_each_other(
    server, clients, open_page, monkeypatch
):
    # what the pages' periodic `stats` messages deliver to the server
    reports: list[tuple[str, dict]] = []
    diagnostics = server.services.diagnostics
    original = diagnostics.client_report

    def capture(peer_id: str, report: dict) -> None:
        reports.append((peer_id, report))
        original(peer_id, report)

    monkeypatch.setattr(diagnostics, "client_report", capture)

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

    # the periodic stats reports reach the server, one per page every 2 s
    def latest(peer_id: str) -> dict | None:
        return next((r for p, r in reversed(reports) if p == peer_id), None)

    deadline = time.monotonic() + 5
    while not (
        (report := latest(a_id))
        and {i["peer_id"] for i in report["inbound"]} == {b_id, carol.peer_id}
        and latest(b_id)
    ):
        assert time.monotonic() < deadline, f"no full stats reports: {reports}"
        await asyncio.sleep(0.1)
    mic = report["outbound"][0]
    assert mic["source"] == "microphone"
    assert mic["packetsSent"] > 0 and mic["bytesSent"] > 0
    assert mic["totalAudioEnergy"] > 0 and mic["totalSamplesDuration"] > 0
    assert (mic["trackEnabled"], mic["trackMuted"], mic["trackReadyState"]) == (
        True,
        False,
        "live",
    )
    for inbound in report["inbound"]:
        assert inbound["source"] == "microphone"
        assert inbound["packetsReceived"] > 0 and inbound["totalAudioEnergy"] > 0
        assert inbound["totalSamplesReceived"] > 0
        assert inbound["jitterBufferEmittedCount"] > 0
        assert {"packetsLost", "jitter", "concealedSamples", "audioLevel"} <= set(
            inbound
        )
    assert report["candidatePair"]["publish"]["currentRoundTripTime"] >= 0
    assert report["candidatePair"]["subscribe"]["currentRoundTripTime"] >= 0
    times = [r["timestamp"] for p, r in reports if p == a_id]
    # every 2 s, never faster than the server's one per second
    assert all(1.0 < b - a < 4.0 for a, b in itertools.pairwise(times))
    for page in (alice, bob):
        info = await page.debug()
        assert info["websocket"]["voice"]["errors"] == [], page.dump()
        assert info["voice"]["errors"] == [], page.dump()
        assert page.errors == []
