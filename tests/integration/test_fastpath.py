"""The fast path keeps what aiortc's sender guaranteed: continuous streams,
retransmission, sender reports, receiver-report RTT, and a loud version check."""

import asyncio
import itertools
import time

import pylibsrtp
import pytest
from aiortc.rtp import RtcpSrPacket, RtpPacket

from miscord_client.rtc import UnsupportedAiortc
from sfu.native import ffi
from sfu.rtc import compat
from sfu.rtc.srtp import address, own_session
from tests.media import CounterScreen
from tests.voice import settle, tone_participant


class RtpLog:
    """A raw sink: every RTP packet a client receives, per (peer, source)."""

    def __init__(self):
        self.packets = {}

    def __call__(self, remote, packet):
        self.packets.setdefault((remote.peer_id, remote.source), []).append(
            (time.monotonic(), packet.sequence_number, packet.timestamp, packet.payload)
        )


def raw_listener(clients, server, user, log):
    client = clients(server, user)
    client.raw_sink = log
    return client


def assert_continuous(packets, min_gap_ticks=None):
    seqs = [seq for _, seq, _, _ in packets]
    steps = {(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)}
    assert steps == {1}, f"sequence steps {sorted(steps)[:10]}"
    stamps = [ts for _, _, ts, _ in packets]
    deltas = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)]
    assert all(0 < d < 0x80000000 for d in deltas), (
        "timestamps went backwards or stood still"
    )
    return deltas


async def test_sequence_and_timestamps_continue_across_mute_and_renegotiation(
    server, clients
):
    log = RtpLog()
    listener = raw_listener(clients, server, "listener", log)
    await listener.join("room")
    alice = await tone_participant(clients, server, "alice", 440)
    key = (alice.peer_id, "microphone")
    await settle(lambda: len(log.packets.get(key, [])) > 50)
    await alice.mute("microphone", True)
    await asyncio.sleep(1.0)
    muted_at = time.monotonic()
    count_muted = len(log.packets[key])
    await alice.mute("microphone", False)
    await settle(lambda: len(log.packets[key]) > count_muted + 50)
    # the publisher renegotiates (a screen comes and goes) while its audio flows
    await alice.publish(screen=CounterScreen())
    await listener.wait_for_track(alice.peer_id, "screen")
    await alice.unpublish("screen")
    await listener.wait_for(lambda: listener.track_of(alice.peer_id, "screen") is None)
    count = len(log.packets[key])
    await settle(lambda: len(log.packets[key]) > count + 50)

    packets = log.packets[key]
    deltas = assert_continuous(packets)
    # while muted nothing was forwarded, and the timestamp jumped by the silence
    gap = max(deltas)
    assert gap >= 48000 * 0.9, gap
    assert any(t >= muted_at for t, *_ in packets)
    # continuous through a keyframe request too (screen viewers asked for them)
    session = server.services.sfu.participants[alice.peer_id].publish
    pub = session.by_source("microphone")
    # after its first packets, C read the stream off the socket (fan_drain),
    # and what C and Python each took counts in the same statistics
    assert session.probe.rx.drained > 0.9 * pub.packets > 0
    (stream,) = pub.hook.streams.values()
    assert stream.packets_received == pub.packets
    assert pub.stats()["packetsLost"] == 0


class DropOnce:
    """On a client's socket: drops the first incoming SRTP packet with a given
    sequence number (the RTP header is not encrypted), as a lossy network would."""

    def __init__(self, pc):
        self.target = None
        self.dropped = []
        connection = pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in connection._protocols:
            original = protocol.datagram_received

            def received(data, addr, _orig=original):
                if (
                    self.target is not None
                    and len(data) > 12
                    and 127 < data[0] < 192
                    and int.from_bytes(data[2:4], "big") == self.target
                ):
                    self.dropped.append(self.target)
                    self.target = None
                    return
                _orig(data, addr)

            protocol.datagram_received = received


async def lose_one(listener, log, key):
    """Drop one packet of the stream on its way into the client; its number."""
    dropper = DropOnce(listener.subscribe_pc)
    dropper.target = (log.packets[key][-1][1] + 25) & 0xFFFF  # half a second ahead
    await settle(lambda: dropper.dropped, timeout=5)
    return dropper.dropped[0]


def received(log, key, seq):
    return any(s == seq for _, s, _, _ in log.packets[key])


async def test_subscriber_nack_gets_the_lost_packet(server, clients):
    log = RtpLog()
    listener = raw_listener(clients, server, "listener", log)
    await listener.join("room")
    alice = await tone_participant(clients, server, "alice", 440)
    key = (alice.peer_id, "microphone")
    await settle(lambda: len(log.packets.get(key, [])) > 20)
    lost = await lose_one(listener, log, key)
    await settle(lambda: received(log, key, (lost + 3) & 0xFFFF))
    assert not received(log, key, lost)
    receiver = listener.track_of(alice.peer_id).transceiver.receiver
    media_ssrc = next(iter(receiver._RTCRtpReceiver__remote_streams))
    await receiver._send_rtcp_nack(media_ssrc, [lost])  # aiortc NACKs only video
    await settle(lambda: received(log, key, lost))
    downlink = _downlink(server, listener, alice, "microphone")
    native = downlink.native
    assert native.nack_count == 1 and native.retransmitted_packets == 1
    assert native.rtx_pt == 0  # audio: the same packet again


async def test_video_nack_is_answered_with_rtx(server, clients):
    log = RtpLog()
    listener = raw_listener(clients, server, "viewer", log)
    await listener.join("room")
    alice = await tone_participant(clients, server, "alice", 440)
    await alice.publish(screen=CounterScreen())
    key = (alice.peer_id, "screen")
    await settle(lambda: len(log.packets.get(key, [])) > 20, timeout=10)
    lost = await lose_one(listener, log, key)
    # the viewer's receiver NACKs the gap by itself; the server answers with RTX
    await settle(lambda: received(log, key, lost))
    downlink = _downlink(server, listener, alice, "screen")
    native = downlink.native
    assert native.nack_count >= 1 and native.retransmitted_packets >= 1
    assert native.rtx_pt != 0
    streams = listener.track_of(
        alice.peer_id, "screen"
    ).transceiver.receiver._RTCRtpReceiver__remote_streams
    assert len(streams) == 2  # the media SSRC and the RTX SSRC


def _downlink(server, listener, publisher, source):
    participant = server.services.sfu.participants[listener.peer_id]
    return next(
        s
        for s in participant.subscribe.downlinks
        if s.publication is not None
        and s.publication.peer_id == publisher.peer_id
        and s.publication.source == source
    )


async def test_each_sender_protects_with_its_own_session_keyed_as_aiortcs(
    server, clients
):
    """The C fan-out protects with a session per sender (libsrtp then finds
    the stream at once): it is keyed as aiortc's sending session, and only it
    protects that SSRC's RTP."""
    log = RtpLog()
    listener = raw_listener(clients, server, "listener", log)
    await listener.join("room")
    alice = await tone_participant(clients, server, "alice", 440)
    await settle(lambda: len(log.packets.get((alice.peer_id, "microphone"), [])) > 5)
    hook = _downlink(server, listener, alice, "microphone").hook
    dtls, own = hook._own
    assert hook._target.srtp == ffi.cast("void *", address(own._srtp[0]))
    packet = RtpPacket(111, 0, 1, 960, 0x5EED, b"opus").serialize()
    theirs = own_session(dtls, 0x5EED)
    assert theirs.protect(packet) == dtls._tx_srtp.protect(packet)
    with pytest.raises(pylibsrtp.Error):  # its SSRC alone
        theirs.protect(RtpPacket(111, 0, 1, 960, 0x5EEE, b"opus").serialize())


async def test_receiver_reports_give_rtt_and_sender_reports_are_right(server, clients):
    a = await tone_participant(clients, server, "alice", 440)
    b = await tone_participant(clients, server, "bob", 660)
    remote = await b.wait_for_track(a.peer_id)
    reports = []
    receiver = remote.transceiver.receiver
    original = receiver._handle_rtcp_packet

    async def spy(packet):
        if isinstance(packet, RtcpSrPacket):
            reports.append((time.time(), packet.sender_info))
        await original(packet)

    receiver._handle_rtcp_packet = spy
    await settle(lambda: len(reports) >= 3, timeout=8)
    downlink = _downlink(server, b, a, "microphone")
    await settle(lambda: downlink.rtt is not None, timeout=8)
    items = {i["type"]: i for i in downlink.stats()}
    remote_inbound = items["remote-inbound-rtp"]
    assert (
        0 <= remote_inbound["roundTripTime"] < 0.2
        and remote_inbound["ssrc"] == downlink._ssrc
    )
    assert items["outbound-rtp"]["packetsSent"] > 50
    # aiortc's getStats() of the server's subscribe connection says the same
    pc = server.services.sfu.participants[b.peer_id].subscribe.pc
    stats = await pc.getStats()
    outbound = [s for s in stats.values() if s.type == "outbound-rtp"]
    assert outbound and outbound[0].packetsSent > 50
    assert any(
        s.type == "remote-inbound-rtp" and s.roundTripTime is not None
        for s in stats.values()
    )
    # SR: packet count matches what arrived; RTP clock advances with the NTP clock
    (_t1, first), (_t2, last) = reports[0], reports[-1]
    received = await receiver.getStats()
    inbound = next(s for s in received.values() if s.type == "inbound-rtp")
    assert abs(last.packet_count - inbound.packetsReceived) < 100
    ntp_seconds = (
        (last.ntp_timestamp - first.ntp_timestamp) & 0xFFFFFFFFFFFFFFFF
    ) / 2**32
    rtp_seconds = ((last.rtp_timestamp - first.rtp_timestamp) & 0xFFFFFFFF) / 48000
    assert abs(ntp_seconds - rtp_seconds) < 0.05
    assert last.octet_count > first.octet_count


async def test_fast_path_is_the_default_and_carries_no_track():
    from signaling.config import Settings

    assert Settings().forwarding == "fast"


async def test_unknown_library_versions_fail_loudly():
    compat.check_compatibility()  # the installed ones are the tested ones
    await compat.selftest()
    for name in compat.TESTED:
        versions = compat.installed_versions()
        versions[name] = "99.0.0"
        with pytest.raises(UnsupportedAiortc, match=name):
            compat.check_compatibility(versions)


async def test_track_path_fallback_also_carries_screens(start_server, clients):
    server = await start_server(forwarding="track")
    from tests.media import VideoWatcher

    alice = await tone_participant(clients, server, "alice", 440)
    bob = await tone_participant(clients, server, "bob", 660)
    await alice.publish(screen=CounterScreen())
    watcher = VideoWatcher((await bob.wait_for_track(alice.peer_id, "screen")).track)
    await settle(lambda: len(watcher.frames) >= 5, timeout=10)
    counters = watcher.counters
    assert counters[-1] > counters[0]
    await watcher.stop()
