"""The audio-diagnosis report with real aiortc peers: each fault is injected in a
client (the server is untouched) and the report must name it, with its side, and
keep the contract's consistency rules (``assert_consistent``). Each case prints
its row of the fault matrix (``-s``); DTX and resume are in test_opus_loss.py
and test_resume.py."""

import asyncio
import time

from diagnostics.quality import mos, r_factor
from tests.diag_call import (
    FAST,
    assert_consistent,
    connected,
    diag_server,
    fetch,
    finding,
    found,
    has,
    participant,
    report,
    row,
    settled,
    summary,
    wait_report,
)
from tests.faults import IncomingFault, OutgoingFault


async def test_healthy_call_has_no_findings_and_scores_above_80(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)

    for client in (a, b):
        body = await wait_report(server, client.peer_id, settled)
        assert body["findings"] == [], summary(body)
        assert_consistent(body)
        row(f"healthy call ({client.peer_id})", body)
        assert body["verdict"] == "ok"
        for side in ("uplink", "downlink"):
            assert body[side]["score"] > 80 and body[side]["mos"] > 4.0, summary(body)
            assert body[side]["loss_pct"] < 1
        events = {e["event"] for e in body["timeline"]}
        assert {"joined", "published", "negotiated", "offer", "subscribed"} <= events
        assert {"ice", "dtls", "connection", "state"} <= events
        series = body["series"]
        assert len(set(map(len, series.values()))) == 1  # aligned
        assert any(level is not None and level > -30 for level in series["level_dbov"])
    # the stats API: the latest raw sample, derived rates and the client's report
    status, stats = await fetch(server, f"/api/peers/{a.peer_id}/stats")
    assert status == 200
    types = {item["type"] for item in stats["latest"]["stats"]}
    assert {"transport", "inbound-rtp", "outbound-rtp", "remote-inbound-rtp"} <= types
    assert stats["history"][-1]["uplink"]["packets_per_s"] > 40
    assert stats["client"]["inbound"][0]["peer_id"] == b.peer_id
    assert stats["client"]["outbound"][0]["packetsSent"] > 0


async def test_publisher_sending_silence(start_server, clients):
    server = await diag_server(start_server)
    a = clients(server, "alice")
    await a.join("room")
    from tests.media import ToneTrack

    mute_tone = ToneTrack(440)
    mute_tone.silent = True
    await a.publish(microphone=mute_tone)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    body = await wait_report(server, a.peer_id, has("silent_microphone", "uplink"))
    assert body["verdict"] == "broken"
    silent = finding(body, "silent_microphone")
    assert silent["severity"] == "critical"
    assert_consistent(body)
    assert body["uplink"]["audio_score"] == 0 and body["uplink"]["mos"] > 4.0
    row("silent microphone (digital silence)", body)
    assert silent["evidence"]["max_dbov"] <= -100
    assert ("silent_microphone", "uplink") not in found(await report(server, b.peer_id))


async def test_a_quiet_microphone_is_someone_not_talking(start_server, clients):
    """Room noise at about -80 dBov is no fault: at most info, no score lost."""
    server = await diag_server(start_server)
    a = clients(server, "alice")
    await a.join("room")
    from tests.media import ToneTrack

    await a.publish(microphone=ToneTrack(440, amplitude=0.0002))
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    body = await wait_report(server, a.peer_id, has("silent_microphone", "uplink"))
    quiet = finding(body, "silent_microphone")
    assert quiet["severity"] == "info" and quiet["evidence"]["max_dbov"] > -100
    assert body["verdict"] == "ok" and body["uplink"]["audio_score"] == 100
    assert_consistent(body)
    row("quiet microphone (room noise, -80 dBov)", body)


async def test_participant_that_publishes_nothing(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", None)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    body = await wait_report(server, a.peer_id, has("no_audio_published", "uplink"))
    assert body["verdict"] == "broken"
    assert body["uplink"]["score"] is None  # nothing measured, nothing claimed
    assert_consistent(body)
    row("never published", body)
    assert found(await report(server, b.peer_id)) == set()


async def test_uplink_loss_is_the_publishers_not_its_listeners(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    fault = OutgoingFault(a.publish_pc, drop=0.1)
    body = await wait_report(server, a.peer_id, has("uplink_loss", "uplink"))
    assert body["verdict"] == "degraded"
    loss = finding(body, "uplink_loss")
    assert loss["evidence"]["threshold_pct"] == 1.0
    await asyncio.sleep(2.0)  # a full window of loss
    body = await report(server, a.peer_id)
    assert 5 < body["uplink"]["loss_pct"] < 16, summary(body)
    assert body["uplink"]["score"] < 80
    assert_consistent(body)
    row("uplink loss 10 % (random)", body)
    # bob's receiver reports carry alice's gaps, but bob's own downlink is clean
    bob = await report(server, b.peer_id)
    assert ("downlink_loss", "downlink") not in found(bob), summary(bob)
    assert bob["downlink"]["loss_pct"] < 1, summary(bob)
    assert fault.dropped > 0


async def test_downlink_loss_on_one_subscriber_only(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    c = await participant(clients, server, "carol", 880)
    await connected(server, a, b, c)
    IncomingFault(c.subscribe_pc, drop=0.1)

    def judged(body):  # on 300 packets, not the first 50: 10 % loss reads 7-13 %
        found = has("downlink_loss", "downlink")(body)
        return found and finding(body, "downlink_loss")["evidence"]["expected"] >= 300

    body = await wait_report(server, c.peer_id, judged)
    assert body["verdict"] == "degraded", summary(body)
    assert_consistent(body)
    row("downlink loss 10 % on one listener", body)
    evidence = finding(body, "downlink_loss")["evidence"]
    assert evidence["loss_pct_by_peer"]
    assert set(evidence["loss_pct_by_peer"]) <= {a.peer_id, b.peer_id}
    for other in (a, b):  # healthy once past the call's first seconds
        body = await wait_report(server, other.peer_id, settled)
        assert found(body) == set(), summary(body)


async def test_downlink_delay_spread_on_one_listener(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    c = await participant(clients, server, "carol", 880)
    await connected(server, a, b, c)
    IncomingFault(c.subscribe_pc, jitter=0.15)  # carol's download reorders

    def judged(body):  # on a measured downlink
        found = has("delay_variation", "downlink")(body)
        return found and body["downlink"]["mos"] is not None

    body = await wait_report(server, c.peer_id, judged)
    evidence = finding(body, "delay_variation")["evidence"]
    assert evidence["late_pct"] > 1 and body["downlink"]["mos"] < 4.0, summary(body)
    assert evidence["measured_by"] == "client" and evidence["delay_spread_ms"] > 60
    assert ("delay_variation", "uplink") not in found(body), summary(body)
    assert_consistent(body)
    row("downlink delay 0-150 ms at random on one listener", body)
    for other in (a, b):
        assert ("delay_variation", "downlink") not in found(
            await report(server, other.peer_id)
        )


async def test_added_jitter_on_the_uplink(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    OutgoingFault(a.publish_pc, jitter=0.4)  # 0-400 ms: mostly out of order
    body = await wait_report(server, a.peer_id, has("delay_variation", "uplink"))
    spread = finding(body, "delay_variation")
    assert spread["evidence"]["delay_spread_ms"] > 200, summary(body)
    assert spread["evidence"]["late_pct"] > 5, summary(body)
    # one model: the finding's severity is the uplink MOS's band, the verdict
    # follows, and bob's uplink (the unaffected direction) stays good
    mos = body["uplink"]["mos"]
    assert mos < 2.6 and spread["severity"] == "critical", summary(body)
    assert body["verdict"] == "broken"
    assert_consistent(body)
    row("uplink delay 0-400 ms at random (reordered)", body)
    bob = await report(server, b.peer_id)
    assert bob["uplink"]["mos"] > 4.0, summary(bob)
    assert ("delay_variation", "uplink") not in found(bob)


async def test_killed_transport_is_diagnosable_after_removal(start_server, clients):
    server = await diag_server(start_server, media_silence=1.0, media_grace=1.0)
    # the server ends it (4408): it must not come back by itself
    a = await participant(clients, server, "alice", 440, resume=False)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    await asyncio.sleep(2.0)  # a few connected seconds to report on
    OutgoingFault(a.publish_pc).cut = True
    OutgoingFault(a.subscribe_pc).cut = True
    deadline = time.monotonic() + 10
    while a.peer_id in server.services.sfu.participants:
        assert time.monotonic() < deadline, "the killed peer was never removed"
        await asyncio.sleep(0.1)
    # the diagnostics learn of the removal through the event bus, a moment later
    body = await wait_report(server, a.peer_id, lambda body: not body["live"])
    assert body["state"] == "closed"
    assert body["verdict"] == "broken"
    assert found(body) == {("not_connected", "both")}
    assert finding(body, "not_connected")["evidence"]["leave_reason"] == "timeout"
    # the figures are those of its last connected seconds, not its silent end
    assert body["uplink"]["loss_pct"] is not None and body["uplink"]["loss_pct"] < 5
    assert body["uplink"]["mos"] > 4.0 and body["uplink"]["audio_score"] == 0
    assert_consistent(body)
    row("peer killed mid-call", body)
    events = [e["event"] for e in body["timeline"]]
    assert events[-1] == "left" and body["timeline"][-1]["detail"] == {
        "reason": "timeout"
    }
    assert "disconnected" in {
        e["detail"].get("state") for e in body["timeline"] if e["event"] == "state"
    }
    # still listed, and its own user may still read it
    status, peers = await fetch(server, "/api/peers")
    assert {p["peer_id"]: p["live"] for p in peers}[a.peer_id] is False
    status, _ = await fetch(server, f"/api/peers/{a.peer_id}/report", token="alice")
    assert status == 200


async def test_one_way_audio_names_both_ends(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    IncomingFault(b.subscribe_pc, drop=1.0)  # bob's download carries no RTP
    bob = await wait_report(server, b.peer_id, has("one_way_audio", "downlink"))
    assert bob["verdict"] == "broken"
    assert finding(bob, "one_way_audio")["remote_peer"] == a.peer_id
    assert bob["downlink"]["audio_score"] == 0
    assert_consistent(bob)
    row("one-way audio (a listener's download dead)", bob)
    alice = await wait_report(server, a.peer_id, has("one_way_audio", "uplink"))
    assert finding(alice, "one_way_audio")["remote_peer"] == b.peer_id


async def test_client_reported_concealment_names_the_remote_peer(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440, stats=False)
    b = await participant(clients, server, "bob", 660)
    c = await participant(clients, server, "carol", 880)
    await connected(server, a, b, c)

    def stats(seconds: float, concealed_from_b: float) -> dict:
        samples = 48000 * seconds
        inbound = [
            {
                "peer_id": b.peer_id,
                "source": "microphone",
                "packetsReceived": 50 * seconds,
                "packetsLost": 0,
                "concealedSamples": concealed_from_b,
                "totalSamplesReceived": samples,
                "totalAudioEnergy": seconds * 0.1,
            },
            {
                "peer_id": c.peer_id,
                "source": "microphone",
                "packetsReceived": 50 * seconds,
                "packetsLost": 0,
                "concealedSamples": samples * 0.002,
                "totalSamplesReceived": samples,
                "totalAudioEnergy": seconds * 0.1,
            },
        ]
        return {"timestamp": time.time(), "outbound": [], "inbound": inbound}

    await a.send_stats(stats(10, 48000 * 10 * 0.01))
    await asyncio.sleep(1.1)
    await a.send_stats(stats(12, 48000 * 10 * 0.01 + 48000 * 2 * 0.08))
    body = await wait_report(
        server,
        a.peer_id,
        lambda r: has("robotic_audio", "downlink")(r) and r["downlink"]["score"],
    )
    robotic = [f for f in body["findings"] if f["code"] == "robotic_audio"]
    assert [f["remote_peer"] for f in robotic] == [b.peer_id]
    assert robotic[0]["evidence"]["band"] == "bad"
    assert 7.5 < robotic[0]["evidence"]["concealment_pct"] < 8.5
    assert body["verdict"] == "degraded"
    # the server's own counters are clean: nothing else is wrong
    assert found(body) == {("robotic_audio", "downlink")}, summary(body)
    assert body["downlink"]["score"] > 80


async def test_mute_and_microphone_taken_by_the_os(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440, stats=False)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    await a.mute("microphone", True)
    body = await wait_report(server, a.peer_id, has("muted", "uplink"))
    muted = finding(body, "muted")
    assert muted["severity"] == "info"  # deliberate: never a fault
    assert_consistent(body)
    row("muted", body)
    assert body["verdict"] == "ok" and body["uplink"]["audio_score"] == 100
    await a.mute("microphone", False)
    await wait_report(server, a.peer_id, lambda r: not found(r))
    await asyncio.sleep(1.0)  # reports from before the unmute are forgiven
    # unmuted in the app, but the browser says the track is muted (OS, hardware)
    await a.send_stats(
        {
            "outbound": [
                {"source": "microphone", "trackMuted": True, "trackEnabled": True}
            ]
        }
    )
    body = await wait_report(server, a.peer_id, has("mic_muted_by_os", "uplink"))
    assert body["verdict"] == "broken"


async def test_packets_arrive_but_nothing_plays(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440, stats=False)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    for n in (1, 2):
        entry = {
            "peer_id": b.peer_id,
            "packetsReceived": 100 * n,
            "totalSamplesReceived": 0,
            "concealedSamples": 0,
        }
        await a.send_stats({"inbound": [entry]})
        await asyncio.sleep(1.05)
    body = await wait_report(server, a.peer_id, has("no_playout", "downlink"))
    assert finding(body, "no_playout")["remote_peer"] == b.peer_id
    assert body["verdict"] == "broken"


async def test_alone_in_the_channel_is_information(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    await connected(server, a)
    body = await wait_report(server, a.peer_id, has("alone_in_channel", "both"))
    assert body["verdict"] == "ok"
    assert finding(body, "alone_in_channel")["severity"] == "info"


async def test_connection_flapping(start_server, clients):
    server = await diag_server(start_server, media_silence=2.0, media_grace=10.0)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    participant_a = server.services.sfu.participants[a.peer_id]
    for _ in range(2):
        faults = [OutgoingFault(pc) for pc in (a.publish_pc, a.subscribe_pc)]
        for fault in faults:
            fault.cut = True
        deadline = time.monotonic() + 8
        while participant_a.state != "disconnected":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        for fault in faults:
            fault.restore()
        while participant_a.state != "connected":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    # the cuts' own loss leaves the window; the drops stay remembered
    body = await wait_report(
        server, a.peer_id, lambda r: found(r) == {("connection_flapping", "both")}
    )
    assert finding(body, "connection_flapping")["evidence"]["drops"] >= 2
    assert body["verdict"] == "degraded", summary(body)


# --- the rest of the fault matrix: loss rates, bursts, a slow route -------------


async def call(start_server, clients):
    server = await diag_server(start_server)
    a = await participant(clients, server, "alice", 440)
    b = await participant(clients, server, "bob", 660)
    await connected(server, a, b)
    return server, a, b


async def a_window_of(fault: OutgoingFault, **changes: float) -> None:
    for name, value in changes.items():
        setattr(fault, name, value)
    await asyncio.sleep(FAST["window"] + 1.0)


async def test_mos_falls_monotonically_with_uplink_loss(start_server, clients):
    server, a, b = await call(start_server, clients)
    fault = OutgoingFault(a.publish_pc, seed=7)
    moses = []
    for pct in (0, 3, 8, 15, 30):
        await a_window_of(fault, drop=pct / 100)
        body = await report(server, a.peer_id)
        assert_consistent(body)
        row(f"uplink loss {pct} % (random)", body)
        moses.append(body["uplink"]["mos"])
        if pct >= 3:
            assert ("uplink_loss", "uplink") in found(body), summary(body)
        bob = await report(server, b.peer_id)  # the listener's own paths stay good
        assert bob["uplink"]["mos"] > 4.0 and bob["downlink"]["mos"] > 4.0, summary(bob)
    assert moses == sorted(moses, reverse=True) and len(set(moses)) == 5, moses


async def test_bursty_loss_costs_more_than_the_same_random_loss(start_server, clients):
    server, a, _ = await call(start_server, clients)
    fault = OutgoingFault(a.publish_pc, seed=3)
    await a_window_of(fault, drop=0.08)
    random = await report(server, a.peer_id)
    await a_window_of(fault, burst=5)
    bursty = await report(server, a.peer_id)
    for case, body in (("8 % random", random), ("8 % in bursts of 5", bursty)):
        assert_consistent(body)
        row(f"uplink loss {case}", body)
    ratio = finding(bursty, "uplink_loss")["evidence"]["burst_ratio"]
    assert ratio > 2.0, summary(bursty)
    assert finding(random, "uplink_loss")["evidence"]["burst_ratio"] < 1.5
    # the same loss scattered would score better (the window's loss varies)
    up = bursty["uplink"]
    scattered = mos(r_factor(up["loss_pct"], 1.0, 2 * up["jitter_ms"]))
    assert up["mos"] < scattered, (up, scattered)


async def test_a_slow_route_on_the_publish_connection_only(start_server, clients):
    server, a, _ = await call(start_server, clients)
    # every packet alice's publish connection sends waits 350 ms: its consent
    # checks' round trip; her subscribe connection goes the short way
    OutgoingFault(a.publish_pc, delay=0.35)

    def steady(body):  # a step in delay is variation, until it is history
        return has("high_rtt", "uplink")(body) and not has("delay_variation", "uplink")(
            body
        )

    body = await wait_report(server, a.peer_id, steady, 20)
    assert body["uplink"]["rtt_ms"] > 340, summary(body)
    assert body["downlink"]["rtt_ms"] is None or body["downlink"]["rtt_ms"] < 50
    assert ("high_rtt", "downlink") not in found(body)
    # a one-way delay of 175 ms is within ITU-T G.114's: named, not a fault
    assert finding(body, "high_rtt")["severity"] == "info", summary(body)
    assert_consistent(body)
    row("publish connection's route +350 ms", body)
