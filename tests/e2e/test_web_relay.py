"""A browser that may use TURN only (``iceTransportPolicy: "relay"``, as
behind a firewall that lets nothing else through) joins through a real
coturn with the credentials of ``joined.ice_servers``: it speaks, hears and
watches a screen share, and its debug API shows the relayed pairs."""

from __future__ import annotations

import pytest

from tests.e2e.test_web_screen import PLAYING
from tests.media import AudioRecorder, CounterScreen, ToneTrack, wait_for_tone
from tests.turn import TURN_SECRET

pytestmark = pytest.mark.browser


async def test_a_relay_only_browser_speaks_hears_and_watches(
    coturn, start_server, clients, open_page
):
    server = await start_server(turn_urls=[coturn.url], turn_secret=TURN_SECRET)
    alice = await open_page("alice", 500, on=server, relay=True)
    a_id = await alice.join("alice", "relayed")
    bob = clients(server, "bob")
    await bob.join("relayed")
    await bob.publish(microphone=ToneTrack(700), screen=CounterScreen())

    await alice.wait_hearing(bob.peer_id, timeout=15)
    from_alice = AudioRecorder((await bob.wait_for_track(a_id)).track)
    try:
        await wait_for_tone(from_alice, 500)
    finally:
        await from_alice.stop()
    size = await alice.wait_for(PLAYING, [bob.peer_id], timeout=15)
    assert size["width"] == 640 and size["height"] == 360

    # both of alice's connections go through the relay, as her debug API says
    await alice.stats()  # getDebugInfo shows the pairs of the last stats
    pairs = (await alice.debug())["voice"]["candidatePairs"]
    for pc in ("publish", "subscribe"):
        assert pairs[pc]["local"]["candidateType"] == "relay", pairs
        assert pairs[pc]["local"]["relayProtocol"] == "udp", pairs
        assert pairs[pc]["remote"]["address"] == "127.0.0.1", pairs
    diagnosis = await alice.diagnose()
    checked = diagnosis["checks"]["candidatePairs"]
    assert checked["publish"]["local"]["candidateType"] == "relay"
    assert ":alice>: incoming packet ALLOCATE processed, success" in (coturn.log_text())
    info = await alice.debug()
    assert info["voice"]["errors"] == [], alice.dump()
    assert alice.errors == []
