"""Screen sharing: publish, view, keyframes on demand, stop and reuse."""

import asyncio
import time

from aiortc import RTCPeerConnection

from miscord_client.client import ServerError
from tests.media import HEARD, CounterScreen, ToneTrack, VideoWatcher, tone_share
from tests.screen import prepare_screen_spy
from tests.voice import Ears, server_counts, settle, tone_participant


async def share(client, screen=None):
    screen = screen or CounterScreen()
    await client.publish(screen=screen, prepare=prepare_screen_spy(client))
    return screen


async def watch(client, peer_id, timeout=10):
    remote = await client.wait_for_track(peer_id, "screen", timeout)
    return VideoWatcher(remote.track)


async def advancing(watcher, at_least=10, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counters = watcher.counters
        if len(counters) >= at_least and counters[-1] > counters[0] + at_least // 2:
            return counters
        await asyncio.sleep(0.1)
    raise AssertionError(f"screen did not advance: {watcher.counters[-20:]}")


async def test_two_viewers_see_the_counter_advance_and_audio_flows(server, clients):
    sharer = await tone_participant(clients, server, "sharer", 440)
    viewers = [
        await tone_participant(clients, server, f"viewer{i}", 660 + 220 * i)
        for i in range(2)
    ]
    await share(sharer)
    for viewer in viewers:
        assert await viewer.wait_for_message(
            "track_published", peer_id=sharer.peer_id, source="screen"
        )
    watchers = [await watch(v, sharer.peer_id) for v in viewers]
    for w in watchers:
        counters = await advancing(w)
        assert counters == sorted(counters)  # in order, no frame from the past
        assert w.size == (640, 360)
    ears = Ears(viewers[0])
    await ears.hears(sharer.peer_id, 440)
    # the subscribe offer names the screen
    participant = server.services.sfu.participants[viewers[0].peer_id]
    assert any(
        s.publication and s.publication.source == "screen"
        for s in participant.subscribe.downlinks
    )
    for w in watchers:
        await w.stop()
    await ears.stop()


async def test_late_viewer_gets_a_keyframe_within_a_second(server, clients):
    sharer = await tone_participant(clients, server, "sharer", 440)
    early = await tone_participant(clients, server, "early", 660)
    await share(sharer)
    first = await watch(early, sharer.peer_id)
    await advancing(first)
    await asyncio.sleep(5 - (time.monotonic() - first.started))
    late = await tone_participant(clients, server, "late", 880)
    joined_at = time.monotonic()
    watcher = await watch(late, sharer.peer_id)
    await settle(lambda: watcher.frames, timeout=3)
    assert watcher.frames[0][0] - joined_at < 1.0
    assert sharer.screen_spy.requests  # a keyframe was asked of the publisher
    await first.stop()
    await watcher.stop()


async def test_keyframe_requests_are_throttled_per_publisher(start_server, clients):
    server = await start_server(keyframe_interval=1.0)
    sharer = await tone_participant(clients, server, "sharer", 440)
    await share(sharer)
    await asyncio.sleep(1.0)
    viewers = await asyncio.gather(
        *(tone_participant(clients, server, f"v{i}", 500 + 50 * i) for i in range(4))
    )
    watchers = [await watch(v, sharer.peer_id) for v in viewers]
    for w in watchers:
        await advancing(w, at_least=5)
    # viewers also ask by PLI from the client side, several at once
    participants = [server.services.sfu.participants[v.peer_id] for v in viewers]
    for _ in range(5):
        for p in participants:
            for downlink in p.subscribe.downlinks:
                if downlink.publication is not None and downlink.kind == "video":
                    await downlink._handle_rtcp_packet(_pli(downlink._ssrc))
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.2)
    pub = server.services.sfu.participants[sharer.peer_id].publish.by_source("screen")
    assert (
        pub.keyframe_requests >= 4 + 20
    )  # one per new viewer, then 5 rounds of 4 PLIs
    spy = sharer.screen_spy
    period = spy.requests[-1] - spy.requests[0]
    # at most one per second; sent 1.0 s apart, they may arrive a few ms closer
    assert len(spy.requests) <= period / 0.95 + 1
    assert spy.max_per_window(0.8) <= 1
    assert len(spy.requests) <= pub.keyframes_sent
    for w in watchers:
        await w.stop()


def _pli(media_ssrc):
    from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

    return RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=media_ssrc)


async def test_twenty_share_cycles_leave_sdp_and_counts_where_they_began(
    server, clients
):
    sharer = await tone_participant(clients, server, "sharer", 440)
    viewer = await tone_participant(clients, server, "viewer", 660)
    ears = Ears(viewer, keep_seconds=120)
    await ears.hears(sharer.peer_id, 440)
    await share(sharer)
    await viewer.wait_for_track(sharer.peer_id, "screen")
    await sharer.unpublish("screen")
    unpublished = await viewer.wait_for_message(
        "track_unpublished", peer_id=sharer.peer_id, source="screen"
    )
    assert unpublished
    await viewer.wait_for(lambda: viewer.track_of(sharer.peer_id, "screen") is None)
    await asyncio.sleep(0.3)
    counts = server_counts(server.services)
    sizes = (
        len(sharer.publish_pc.localDescription.sdp),
        len(viewer.subscribe_pc.remoteDescription.sdp),
    )
    viewer_side = server.services.sfu.participants[viewer.peer_id]
    audio_downlink = next(
        s for s in viewer_side.subscribe.downlinks if s.kind == "audio"
    )
    start = time.monotonic()
    sent_before = audio_downlink.packets_sent
    for _ in range(20):
        screen = await share(sharer)
        watcher = await watch(viewer, sharer.peer_id)
        await settle(lambda w=watcher: len(w.frames) >= 2, timeout=5)
        await watcher.stop()
        await sharer.unpublish("screen")
        await viewer.wait_for(lambda: viewer.track_of(sharer.peer_id, "screen") is None)
        assert screen.readyState == "ended"
    await asyncio.sleep(0.3)
    assert server_counts(server.services) == counts
    mlines = (
        sharer.publish_pc.localDescription.sdp.count("m="),
        viewer.subscribe_pc.remoteDescription.sdp.count("m="),
    )
    assert mlines == (2, 2)
    new_sizes = (
        len(sharer.publish_pc.localDescription.sdp),
        len(viewer.subscribe_pc.remoteDescription.sdp),
    )
    assert all(
        abs(a - b) < 80 for a, b in zip(sizes, new_sizes, strict=True)
    )  # ids/ports differ, no growth
    # audio flowed the whole time: the server forwarded every 20 ms packet and the
    # tone is in every second of what the viewer heard
    elapsed = time.monotonic() - start
    assert audio_downlink.packets_sent - sent_before >= 0.95 * 50 * elapsed
    recorder = ears.recorders[sharer.peer_id]
    for second in range(int(elapsed) - 1):
        assert tone_share(recorder.since(start + second)[:48000], 440) >= HEARD
    await ears.stop()


async def test_second_screen_is_refused(server, clients):
    a = clients(server, "alice")
    await a.join("room")
    await a.publish(microphone=ToneTrack(440), screen=CounterScreen())
    pc = a.publish_pc
    extra = pc.addTransceiver(CounterScreen(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sources = {
        t.mid: ("microphone" if t.kind == "audio" else "screen")
        for t in pc.getTransceivers()
    }
    try:
        await a.request(
            {
                "type": "offer",
                "pc": "publish",
                "sdp": pc.localDescription.sdp,
                "sources": sources,
            }
        )
    except ServerError as exc:
        assert (
            exc.code == "bad_message" and "at most one screen" in exc.message["message"]
        )
    else:
        raise AssertionError("a second screen was accepted")
    assert extra.mid is not None
    assert (
        server.services.sfu.participants[a.peer_id].publish.by_source("screen")
        is not None
    )


async def test_unsupported_video_codec_only_is_refused(server, clients, sockets):
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:") and ("VP8" in line or "H264" in line):
            line = line.replace("VP8", "VP9").replace("H264", "AV1")
        lines.append(line)
    ws = await sockets(server)
    await ws.join(server.token("mallory"))
    error = await ws.error(
        {
            "type": "offer",
            "pc": "publish",
            "sdp": "\r\n".join(lines) + "\r\n",
            "sources": {"0": "microphone", "1": "screen"},
        }
    )
    assert error["code"] == "bad_sdp" and "VP8 or H264" in error["message"]
    assert await ws.alive()


async def test_screen_limit_per_channel(start_server, clients):
    server = await start_server(max_screens=1)
    a = await tone_participant(clients, server, "alice", 440)
    b = await tone_participant(clients, server, "bob", 660)
    await share(a)
    try:
        await share(b)
    except ServerError as exc:
        assert exc.code == "channel_full" and "screen" in exc.message["message"]
    else:
        raise AssertionError("a second screen in the channel was accepted")
    await a.unpublish("screen")
    await b.wait_for_message("track_unpublished", peer_id=a.peer_id)


async def test_a_screen_alone_is_shared_without_a_microphone(server, clients):
    """The Python client gives a screen-only offer the (inactive) audio m-line
    the server wants first; viewers get the picture."""
    from tests.media import VideoWatcher

    sharer, viewer = clients(server, "sharer"), clients(server, "viewer")
    await viewer.join("room")
    await sharer.join("room")
    await sharer.publish(screen=CounterScreen())
    remote = await viewer.wait_for_track(sharer.peer_id, "screen")
    watcher = VideoWatcher(remote.track)
    await settle(lambda: len(watcher.frames) >= 3, timeout=10)
    assert viewer.track_of(sharer.peer_id, "microphone") is None
    await watcher.stop()
