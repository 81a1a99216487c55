"""Bad input and broken media never disturb the others' audio."""

import asyncio
import itertools
import time

from aiortc import RTCPeerConnection

from sfu import sdp_check
from sfu.rtc.ice import CONSENT_FRESHNESS, ice_transport_of
from tests.faults import OutgoingFault
from tests.media import HEARD, tone_share
from tests.voice import Ears, settle, tone_participant


async def test_media_that_dies_is_removed_with_timeout_although_the_socket_lives(
    server, clients, sockets
):
    watcher = await sockets(server)
    await watcher.join(server.token("watcher"), kind="events")
    # the server ends it (4408): it must not come back by itself
    a = await tone_participant(clients, server, "alice", 440, resume=False)
    participant = server.services.sfu.participants[a.peer_id]
    await settle(lambda: participant.state == "connected")
    OutgoingFault(a.publish_pc).cut = True
    cut_at = time.monotonic()
    left = await watcher.expect("participant_left", timeout=15)
    elapsed = time.monotonic() - cut_at
    assert left == {
        "type": "participant_left",
        "peer_id": a.peer_id,
        "reason": "timeout",
    }
    settings = server.settings
    assert (
        settings.media_grace
        < elapsed
        < settings.media_silence + settings.media_grace + 2.5
    )
    # its socket is closed afterwards with 4408, not left dangling
    await a.wait_for(lambda: a.close_code is not None, timeout=5)
    assert a.close_code == 4408


async def video_only_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_bad_sdp_and_candidates_get_errors_and_audio_never_stops(
    server, clients, sockets
):
    a = await tone_participant(clients, server, "alice", 440)
    b = await tone_participant(clients, server, "bob", 660)
    ears = Ears(b)
    await ears.hears(a.peer_id, 440)
    bad = await sockets(server)
    await bad.join(server.token("mallory"))
    start = time.monotonic()
    cases = [
        (
            {
                "type": "offer",
                "pc": "publish",
                "sdp": "v=0\r\nthis is not sdp",
                "sources": {},
            },
            "bad_sdp",
        ),
        (
            {
                "type": "offer",
                "pc": "publish",
                "sdp": await video_only_offer(),
                "sources": {"0": "screen"},
            },
            "bad_sdp",
        ),
        (
            {"type": "offer", "pc": "subscribe", "sdp": "v=0", "sources": {}},
            "bad_message",
        ),
        # mallory was offered the others' tracks and answers garbage
        ({"type": "answer", "pc": "subscribe", "sdp": "v=0\r\n"}, "bad_sdp"),
        ({"type": "answer", "pc": "publish", "sdp": "v=0\r\n"}, "bad_message"),
        (
            {
                "type": "candidate",
                "pc": "publish",
                "candidate": {"candidate": "garbage", "sdpMid": "0"},
            },
            "bad_message",
        ),
        ({"type": "candidate", "pc": "subscribe", "candidate": None}, "bad_message"),
    ]
    for message, code in cases:
        error = await bad.error(message)
        assert error["code"] == code, (message, error)
    # the same from a participant that is in the middle of a call
    own = [
        {
            "type": "candidate",
            "pc": "publish",
            "candidate": {
                "candidate": "candidate:1 1 udp 1 1.2.3.4 notaport typ host",
                "sdpMid": "0",
            },
        },
        {"type": "answer", "pc": "subscribe", "sdp": "v=0\r\n"},
        {"type": "offer", "pc": "publish", "sdp": "garbage", "sources": {}},
    ]
    for message in own:
        await a.send(message)
    await a.wait_for(lambda: len(a.errors) >= 3)
    assert [e["code"] for e in a.errors] == ["bad_message", "bad_message", "bad_sdp"]
    await asyncio.sleep(1.0)
    # bob heard alice throughout: no gap in frames, the tone in every half second
    recorder = ears.recorders[a.peer_id]
    times = [t for t, _ in recorder.chunks if t >= start]
    assert times and max(b - a for a, b in itertools.pairwise(times)) < 0.2
    for t0 in range(int((time.monotonic() - start) * 2) - 1):
        window = recorder.since(start + t0 / 2)[:24000]
        assert tone_share(window, 440) >= HEARD
    assert not bad.ws.closed and await bad.alive()
    await ears.stop()


async def test_screen_limit_and_wrong_sources(start_server, clients):
    server = await start_server(max_screens=0)
    a = clients(server, "alice")
    await a.join("room")
    from miscord_client.client import ServerError
    from tests.media import ToneTrack

    mic = ToneTrack(440)
    try:
        await a.publish(
            microphone=mic, screen=ToneTrack(660)
        )  # an audio track named screen
    except ServerError as exc:
        assert (
            exc.code == "bad_message"
            and "screen must be video" in exc.message["message"]
        )
    else:
        raise AssertionError("an audio m-line named screen was accepted")


async def test_candidate_flood_is_refused_and_the_call_goes_on(server, clients):
    a = await tone_participant(clients, server, "alice", 440)
    b = await tone_participant(clients, server, "bob", 660)
    ears = Ears(b)
    await ears.hears(a.peer_id, 440)
    for port in range(10000, 10070):
        candidate = f"candidate:{port} 1 udp 2130706431 127.0.0.1 {port} typ host"
        await a.send(
            {
                "type": "candidate",
                "pc": "publish",
                "candidate": {"candidate": candidate, "sdpMid": "0"},
            }
        )
    # the cap counts the candidates the offer's SDP carried too
    refused = 70 - (64 - sdp_check.candidates(a.publish_pc.localDescription.sdp))
    await a.wait_for(lambda: len(a.errors) >= refused)
    assert {e["code"] for e in a.errors} == {"bad_message"}
    assert "more than 64 candidates" in a.errors[0]["message"]
    assert len(a.errors) == refused
    await ears.hears(a.peer_id, 440, timeout=2)
    await ears.stop()


async def test_consent_checks_wait_while_the_peer_talks_and_resume_when_it_is_quiet(
    server, clients
):
    """RFC 7675 consent checks: while the client's media arrives, one every
    CONSENT_FRESHNESS seconds; once only STUN comes, one per interval, and
    their answers keep the participant connected."""
    a = await tone_participant(clients, server, "alice", 440)
    participant = server.services.sfu.participants[a.peer_id]
    await settle(lambda: participant.state == "connected")
    connection = ice_transport_of(participant.publish.pc)._connection
    checks = []
    build = connection.build_request

    def counted(pair, nominate):
        checks.append(time.monotonic())
        return build(pair, nominate=nominate)

    connection.build_request = counted
    interval = server.services.sfu.settings.consent_interval
    assert 5 * interval == CONSENT_FRESHNESS
    await asyncio.sleep(7 * interval)
    assert 1 <= len(checks) <= 2  # not one per interval: seven
    talking = len(checks)
    # quiet but alive: its RTP and RTCP are lost, it stops checking us, it answers
    fault = OutgoingFault(a.publish_pc, drop=1.0)
    ice_transport_of(a.publish_pc)._connection._query_consent_task.cancel()
    await asyncio.sleep(6 * interval)
    assert fault.dropped > 100
    assert len(checks) - talking >= 4
    assert participant.state == "connected"
