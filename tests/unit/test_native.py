"""The C fan-out (sfu/native/fanout.c) against aiortc and libsrtp: what it sends,
a real receiving SRTP session opens and aiortc parses to the rewritten fields;
what it must not send, it skips (for Python) or counts as dropped."""

import os
import socket
from types import SimpleNamespace

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from sfu.fastpath import FastDownlink, FastDownlinks, packet_args
from sfu.native import ffi as native_ffi
from sfu.native import lib as native_lib
from sfu.rtc.outbound import SocketDups
from sfu.rtc.rtcp import report_block, sdes_packet
from sfu.rtc.srtp import address

MID, LEVEL = (
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    ("urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
)
KEY = bytes(range(30))


def new_pub():
    """A publication's C side (``struct fan_publication``), freed with the object."""
    return native_ffi.gc(
        native_lib.fan_publication_new(), native_lib.fan_publication_free
    )


def on_stream(pub, packet, index=None):
    """``pub`` as fan_publish leaves it while it handles ``packet`` (whose
    sequence number is its index, unless given)."""
    pub.has_index, pub.in_ssrc = 1, packet.ssrc
    pub.index = packet.sequence_number if index is None else index
    pub.top = max(pub.top, pub.index)


def publish(group, pub, packet):
    """What a received packet does: counted and fanned out in C, then what C
    left to Python."""
    flags = native_lib.fan_publish(pub, *packet_args(packet))
    group.finish(flags, packet)
    return flags


def extensions_map(with_level):
    extensions = [RTCRtpHeaderExtensionParameters(id=3, uri=MID)]
    if with_level:
        extensions.append(RTCRtpHeaderExtensionParameters(id=9, uri=LEVEL))
    return extensions


class Downlink:
    """A FastDownlink on a real (unconnected) transceiver, sending through a
    real SRTP session into one end of a datagram socket pair."""

    def __init__(self, with_level=True, mid="17"):
        self.pc = RTCPeerConnection()
        self.sender = FastDownlink(self.pc.addTransceiver("audio"), "audio", "viewer")
        self.sender._configure(
            RTCRtpSendParameters(
                headerExtensions=extensions_map(with_level),
                muxId=mid,
                rtcp=RTCRtcpParameters(cname="c"),
            )
        )
        policy = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND)
        policy.allow_repeat_tx = True  # as aiortc sets it: NACKs resend an index
        self.session = Session(policy)
        self.opener = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.theirs.setblocking(False)
        native = self.sender.native
        native.srtp = native_ffi.cast("void *", address(self.session._srtp[0]))
        native.fd = self.ours.fileno()
        native.pt = 111
        self.targets = native_ffi.new("struct fan_downlink *[]", [native])
        self.map = HeaderExtensionsMap()
        self.map.configure(RTCRtpParameters(headerExtensions=extensions_map(True)))

    def start(self, pub, start, ts_off):
        """Bound to ``pub``'s current stream, numbered on from ``start`` (or
        from the top, once started)."""
        self.sender.native.ts_off = ts_off
        native_lib.fan_anchor(self.sender.native, pub, start)

    def send(self, pub, packet):
        """``packet`` fanned out by ``pub`` to this subscriber alone."""
        payload, size, marker, _, ts, _, level = packet_args(packet)
        return native_lib.fan_out(
            pub, self.targets, 1, payload, size, marker, ts, level, 1.0
        )

    def datagram(self):
        try:
            return self.theirs.recv(4096)
        except BlockingIOError:
            return None

    def received_plain(self):
        data = self.datagram()
        return None if data is None else self.opener.unprotect(data)

    def received(self):
        plain = self.received_plain()
        return None if plain is None else RtpPacket.parse(plain, self.map)

    async def close(self):
        self.sender.close()
        await self.pc.close()
        self.ours.close()
        self.theirs.close()


@settings(max_examples=150, deadline=None)
@given(
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 2**32 - 1),
    start=st.integers(0, 0x7FFF),
    ts_off=st.integers(0, 2**32 - 1),
    marker=st.integers(0, 1),
    level=st.none() | st.tuples(st.booleans(), st.integers(0, 127)),
    with_level=st.booleans(),
    payload=st.binary(min_size=1, max_size=64),
    size=st.integers(0, 1460),
)
async def test_what_c_sends_opens_and_parses_to_the_rewrite(
    seq, ts, start, ts_off, marker, level, with_level, payload, size
):
    payload = (payload * (size // len(payload) + 1))[: max(size, 1)]
    link = Downlink(with_level)
    try:
        packet = RtpPacket(96, marker, seq, ts, 0xABCDEF01, payload)
        packet.extensions.audio_level = level
        pub = new_pub()
        on_stream(pub, packet)
        link.start(pub, start, ts_off)
        group = FastDownlinks(pub)
        group.add(link.sender)
        assert native_lib.fan_publish(pub, *packet_args(packet)) == native_lib.FAN_FIRST
        sent = link.datagram()
        # a retransmission is the same datagram again, byte for byte
        assert native_lib.fan_nack(pub, link.sender.native, start, 0, 1.0) == 1
        assert link.datagram() == sent
        group.remove(link.sender)
        got = RtpPacket.parse(link.opener.unprotect(sent), link.map)
        assert got.sequence_number == start
        assert got.timestamp == (ts + ts_off) & 0xFFFFFFFF
        assert got.ssrc == link.sender._ssrc
        assert (got.payload_type, got.marker) == (111, marker)
        assert got.extensions.mid == "17"
        # the level is forwarded where the subscriber negotiated it
        assert got.extensions.audio_level == (level if with_level else None)
        assert got.payload == payload
        native = link.sender.native
        assert (native.packets_sent, native.bytes_sent) == (1, len(payload))
        assert native.dropped == 0 and native.wire_bytes > len(payload)
        assert native.retransmitted_packets == 1
    finally:
        await link.close()


async def test_out_of_sync_subscribers_are_left_to_python_and_gaps_flagged():
    link = Downlink()
    try:
        pub, other_pub = new_pub(), new_pub()
        packet = RtpPacket(96, 0, 100, 48000, 0x1234, b"opus")
        on_stream(pub, packet)
        link.start(pub, 105, 7)
        native = link.sender.native
        # another epoch (a mute), another stream's SSRC, another publication,
        # paused: each leaves the packet to Python
        pub.epoch = 1
        assert link.send(pub, packet) == native_lib.FAN_SKIPPED
        assert native.skipped and link.received() is None
        pub.epoch = 0
        on_stream(pub, RtpPacket(96, 0, 100, 48000, 0x9999, b"x"))
        assert link.send(pub, packet) == native_lib.FAN_SKIPPED
        on_stream(pub, packet)
        on_stream(other_pub, packet)
        assert link.send(other_pub, packet) == native_lib.FAN_SKIPPED
        native.active = 0
        assert link.send(pub, packet) == native_lib.FAN_SKIPPED
        native.active = 1
        assert link.send(pub, packet) == 0 and not native.skipped
        assert link.received().sequence_number == 105
        # three packets lost upstream: one gap mark of three
        later = RtpPacket(96, 0, 104, 48000 + 4 * 960, 0x1234, b"opus")
        on_stream(pub, later)
        assert link.send(pub, later) == native_lib.FAN_GAP
        assert (native.gaps, native.gap_pending, native.top) == (3, 1, 109)
        assert link.received().sequence_number == 109
        # a late packet is sent but does not move the reference back
        late = RtpPacket(96, 0, 102, 48000 + 2 * 960, 0x1234, b"opus")
        on_stream(pub, late)
        assert link.send(pub, late) == 0
        assert link.received().sequence_number == 107 and native.top == 109
        # the same index again with other bytes: never sent
        forged = RtpPacket(96, 0, 102, 48000 + 2 * 960, 0x1234, b"other")
        assert link.send(pub, forged) == 0
        assert link.received() is None and native.refused_index == 1
        # longer than an MTU once rewritten: dropped and counted, never sent
        big = RtpPacket(96, 0, 105, 0, 0x1234, b"x" * (1500 - 12 - 8 + 1))
        on_stream(pub, big)
        assert link.send(pub, big) == 0
        assert native.dropped == 1 and link.received() is None
        # a closed hook takes the session and socket away from the C side
        link.sender.close()
        assert native.fd == -1 and native.srtp == native_ffi.NULL
        assert link.send(pub, packet) == native_lib.FAN_SKIPPED
    finally:
        await link.close()


async def test_new_offsets_never_reach_back_and_jumps_are_clamped():
    """After a re-anchor (a rebind, a mute) the numbering goes on above
    everything sent: a packet that maps below it is refused, however it was
    numbered. A jump forward is clamped so libsrtp's rollover counter and the
    subscriber's agree."""
    link = Downlink()
    try:
        native = link.sender.native
        pub = new_pub()
        on_stream(pub, RtpPacket(96, 0, 1000, 0, 0x1234, b"a"))
        link.start(pub, 200, 0)
        for seq in range(1000, 1010):
            packet = RtpPacket(96, 0, seq, 0, 0x1234, b"a%d" % seq)
            on_stream(pub, packet)
            link.send(pub, packet)
        assert [link.received().sequence_number for _ in range(10)] == list(
            range(200, 210)
        )
        assert native.top == 209
        # another stream on this m-line: numbered on from 210
        pub.epoch += 1
        first = RtpPacket(96, 0, 5, 0, 0x5678, b"b5")
        on_stream(pub, first)
        link.start(pub, 0, 0)
        assert link.send(pub, first) == 0
        assert link.received_plain() is not None and native.top == 210
        # its packets from before: they would map onto 200-209, already used
        for seq in (4, 1, 0):
            packet = RtpPacket(96, 0, seq, 0, 0x5678, b"b%d" % seq)
            on_stream(pub, packet)
            link.send(pub, packet)
        assert native.refused_index == 3 and link.received() is None
        # a jump of 40,000: clamped to FAN_MAX_JUMP, counted as a restart
        far = RtpPacket(96, 0, 40005, 0, 0x5678, b"far")
        on_stream(pub, far)
        link.send(pub, far)
        got = link.received()
        assert got.sequence_number == 210 + native_lib.FAN_MAX_JUMP
        assert native.restarts == 1 and native.top == 210 + native_lib.FAN_MAX_JUMP
        # and what followed the jump's first packet continues from it
        after = RtpPacket(96, 0, 40006, 0, 0x5678, b"next")
        on_stream(pub, after)
        link.send(pub, after)
        assert link.received().sequence_number == 211 + native_lib.FAN_MAX_JUMP
    finally:
        await link.close()


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            # in order, repeated, a little late, very late, jumping
            st.tuples(st.just("packet"), st.sampled_from([-1, 0, 1, 1, 2]), st.just(0)),
            st.tuples(st.just("packet"), st.integers(-40, 40), st.just(0)),
            st.tuples(st.just("packet"), st.integers(-70000, 70000), st.just(0)),
            st.tuples(st.just("anchor"), st.integers(0, 3), st.just(0)),
            st.tuples(st.just("rebind"), st.just(0), st.just(0)),
            st.tuples(st.just("header"), st.integers(0, 2), st.just(0)),
            st.tuples(st.just("nack"), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
            st.tuples(st.just("nack"), st.integers(-3, 0), st.just(0)),  # recent
        ),
        max_size=120,
    )
)
async def test_no_srtp_index_carries_two_different_packets(steps):
    """Whatever a publisher sends (reordered, repeated, jumping), however often
    the m-line is re-anchored, re-bound to another publication (with the same
    SSRC and numbers: a publisher chooses both), renegotiated and NACKed,
    every SRTP index a subscriber receives carries one ciphertext: never two
    different packets under one keystream. The observer extends sequence
    numbers as libsrtp does."""
    link, other = Downlink(), Downlink()
    pubs = [new_pub(), new_pub()]
    groups = [FastDownlinks(pub) for pub in pubs]
    for group in groups:  # someone else watches both: both keep a history
        group.add(other.sender)
    sender, native = link.sender, link.sender.native
    bound = 0
    groups[bound].add(sender)
    seen: dict[int, bytes] = {}
    top = None
    seq, ssrc = 0, 0x1234
    try:
        for n, (kind, value, extra) in enumerate(steps):
            pub = pubs[bound]
            if kind == "nack":
                pid = value if value > 0 else native.top + value
                native_lib.fan_nack(pub, native, pid & 0xFFFF, extra, n * 0.05)
            elif kind == "anchor":  # a mute, or another SSRC after a silence
                if value:
                    ssrc = 0x1234 + value
                    for p in pubs:
                        p.in_last_at = 0.0
                pub.epoch += 1
            elif kind == "rebind":  # as SubscribeSession does with a slot
                groups[bound].remove(sender)
                sender.unbind()
                bound = 1 - bound
                groups[bound].add(sender)
            elif kind == "header":  # a renegotiation
                native_lib.fan_header(native, 96 + value, 0, b"", 0, b"", 0, 0)
            else:
                seq = (seq + value) & 0xFFFF
                for i, p in enumerate(pubs):  # the same numbers, other bytes
                    packet = RtpPacket(96, 0, seq, seq * 960, ssrc, b"%d:%d" % (i, n))
                    flags = native_lib.fan_publish(p, *packet_args(packet))
                    if i == bound and flags & native_lib.FAN_SKIPPED and native.fd >= 0:
                        native.active = 1
                        if not native_lib.fan_bound(native, p):
                            link.start(p, 100, 0)
                        link.send(p, packet)
            while (data := link.datagram()) is not None:
                out = int.from_bytes(data[2:4], "big")
                index = (
                    out
                    if top is None
                    else top + ((out - top + 0x8000) & 0xFFFF) - 0x8000
                )
                top = index if top is None else max(top, index)
                assert seen.setdefault(index, data) == data, f"index {index} reused"
    finally:
        groups[bound].remove(sender)
        for group in groups:
            group.remove(other.sender)
        await link.close()
        await other.close()


async def test_nack_resends_within_the_rtt_once_and_within_the_budget():
    """A retransmission is the packet as it went out; the same NACK again
    within the RTT gets nothing, nor a NACK for what this binding never sent
    (or a number past the history), and resends stop at the byte budget the
    stream itself earned."""
    link = Downlink()
    pub = new_pub()
    sender, group = link.sender, FastDownlinks(pub)
    sender.publication = SimpleNamespace(native=pub)
    group.add(sender)
    native = sender.native
    try:
        for seq in range(100, 105):
            packet = RtpPacket(96, 0, seq, seq * 960, 0x1234, b"p%d" % seq)
            if native_lib.fan_publish(pub, *packet_args(packet)):
                link.start(pub, 500, 0)
                link.send(pub, packet)
        datagrams = [link.datagram() for _ in range(5)]
        assert native.top == 504
        # one item for 502, its bitmask for 503 and 505 (never sent)
        assert native_lib.fan_nack(pub, native, 502, 0b101, 10.0) == 2
        assert [link.datagram() for _ in range(2)] == datagrams[2:4]
        assert link.datagram() is None and native.nack_unknown == 1
        # again within the RTT (none measured yet: 100 ms): nothing
        assert native_lib.fan_nack(pub, native, 502, 0, 10.05) == 0
        assert native.nack_repeated == 1
        assert native_lib.fan_nack(pub, native, 502, 0, 10.2) == 1
        assert link.datagram() == datagrams[2]
        # a PID near the end of the sequence space is numbers, not an error
        assert native_lib.fan_nack(pub, native, 0xFFFF, 0xFFFF, 10.3) == 0
        # the budget: what was sent earned as many bytes as resends may use
        native.rtx_tokens = 2
        assert native_lib.fan_nack(pub, native, 500, 0, 20.0) == 0
        assert native.nack_over_budget == 1
        assert native.retransmitted_packets == 3
    finally:
        group.remove(sender)
        await link.close()


def test_a_socket_is_duplicated_once_and_closed_with_its_last_sender():
    dups = SocketDups()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        first, second = dups.acquire(sock), dups.acquire(sock)
        assert first == second != sock.fileno() and len(dups) == 1
        dups.release(sock)
        os.fstat(first)  # still open for the other sender
        dups.release(sock)
        assert len(dups) == 0
        with pytest.raises(OSError):
            os.fstat(first)


@settings(max_examples=100, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 255),
            st.integers(-(2**23), 2**23 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
        ),
        max_size=31,
    ),
    sender_report=st.booleans(),
    feedback=st.booleans(),
)
def test_c_reads_report_blocks_as_aiortc_does(blocks, sender_report, feedback):
    """What C reads of a subscriber's SRTCP (through a real libsrtp session)
    is what aiortc parses; feedback other than NACKs is left to aiortc."""
    reports = [RtcpReceiverInfo(*b) for b in blocks]
    if sender_report:
        info = RtcpSenderInfo(
            ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4
        )
        first = RtcpSrPacket(ssrc=7, sender_info=info, reports=reports)
    else:
        first = RtcpRrPacket(ssrc=7, reports=reports)
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=7, media_ssrc=9, lost=[5, 7])
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=7, media_ssrc=9)
    compound = bytes(first) + sdes_packet(7, b"cname") + bytes(nack)
    if feedback:
        compound += bytes(pli)
    sender = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    opener = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    rtcp = native_ffi.new("struct fan_rtcp *")
    data = sender.protect_rtcp(compound)
    flags = native_lib.fan_rtcp_scan(rtcp, opener._srtp[0], data, len(data))
    # the NACK is read in C, as one item (PID 5, bit 1 for 7)
    assert rtcp.nacks == 1
    item = rtcp.nack[0]
    assert (item.media_ssrc, item.pid, item.blp, item.first) == (9, 5, 0b10, 1)
    if feedback:  # other feedback is left to aiortc, as a compound of its own
        assert flags == native_lib.FAN_PASS
        assert native_ffi.buffer(rtcp.plain, rtcp.plain_len)[:] == bytes(pli)
    else:
        assert flags == 0 and rtcp.plain_len == 0
    parsed = RtcpPacket.parse(compound)[0].reports
    read = [rtcp.blocks[i] for i in range(rtcp.count)]
    assert [
        (b.ssrc, b.fraction, b.lost, b.highest, b.jitter, b.lsr, b.dlsr) for b in read
    ] == [
        (
            r.ssrc,
            r.fraction_lost,
            r.packets_lost,
            r.highest_sequence,
            r.jitter,
            r.lsr,
            r.dlsr,
        )
        for r in parsed
    ]
    # replayed or forged: refused
    assert native_lib.fan_rtcp_scan(rtcp, opener._srtp[0], data, len(data)) == (
        native_lib.FAN_DROP
    )


async def test_a_report_gives_the_rtt_of_the_sender_report_it_answers():
    link = Downlink()
    try:
        native = link.sender.native
        for i in range(10):  # more than C remembers: the oldest are forgotten
            native_lib.fan_sr_sent(native, 1000 + i, 100.0 + i)
        block = report_block(
            RtcpReceiverInfo(link.sender._ssrc, 0, 0, 1, 0, 1009, 65536)
        )
        link.sender.report(block, 109.0 + 1 + 0.25)  # answered 1 s after it came
        assert link.sender.rtt == pytest.approx(0.25)
        block.lsr = 1000
        link.sender.report(block, 200.0)
        assert native.rtt_count == 1  # an SR no longer remembered: no RTT
        assert link.sender.remote["highestSequenceNumber"] == 1
        block.lsr, block.dlsr = 1008, 0
        link.sender.report(block, 200.0)
        assert native.rtt_count == 1  # DLSR 0: the subscriber got no SR yet
        block.lsr, block.dlsr = 1008, 2 * 65536
        link.sender.report(block, 108.0 + 2 + 0.35)
        assert link.sender.rtt == pytest.approx(0.85 * 0.25 + 0.15 * 0.35)
        assert native.rtt_total == pytest.approx(0.6) and native.reports == 4
    finally:
        await link.close()


def test_c_reads_routed_rtp_off_the_socket_and_leaves_the_rest():
    """fan_drain reads what is routed to C and stops, unread, at anything else
    (STUN here), a stream Python must see (``python``), or work for Python."""
    pub, rx = new_pub(), native_ffi.new("struct fan_rx *")
    stream = native_ffi.new("struct fan_stream *", {"clockrate": 48000})
    for ssrc in (0x1234, 99):  # negotiated; 77 is not, and no margin is left
        assert native_lib.fan_admit(rx, ssrc, 1) == 0
    assert native_lib.fan_admit(rx, 77, 0) == -1
    assert native_lib.fan_route(rx, 0x1234, 111, stream, pub) == 0
    protect = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND)).protect
    opener = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))

    def rtp(seq, ssrc=0x1234):
        return protect(
            RtpPacket(111, 0, seq, seq * 960, ssrc, b"opus%d" % seq).serialize()
        )

    stun = bytes.fromhex("000100002112a442") + bytes(12)
    # a datagram socket pair stands in for the ICE socket (C peeks and reads)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        unrouted, forged = rtp(4, ssrc=99), bytearray(rtp(5))
        forged[-1] ^= 1  # its authentication tag
        stranger = rtp(9, ssrc=77)
        for datagram in (rtp(1), rtp(2), stun, rtp(3), forged, stranger, unrouted):
            theirs.send(datagram)

        def drain():
            return native_lib.fan_drain(rx, ours.fileno(), opener._srtp[0], -1)

        assert drain() == native_lib.FAN_FIRST  # the publication's first packet
        assert drain() == native_lib.FAN_PASS  # STUN next: left unread
        assert ours.recv(2048) == stun
        # 3 is read, a forged one and a stranger read and dropped, then an
        # SSRC not routed
        assert drain() == native_lib.FAN_PASS
        assert ours.recv(2048) == unrouted
        assert (rx.refused_ssrc, rx.refused_last) == (1, 77)
        assert drain() == native_lib.FAN_EMPTY
        pub.python = 1  # a tap: every packet through Python
        theirs.send(later := rtp(6))
        assert drain() == native_lib.FAN_PASS and ours.recv(2048) == later
    assert (rx.drained, pub.packets, stream.packets_received) == (3, 3, 3)
    assert rx.last_at > 0
