"""The fast path's own RTP and RTCP pieces against aiortc's and libsrtp's:
sender reports packed into compounds SRTCP can protect, libsrtp called on
the shared buffer, and the lean RTP parse."""

import pytest
from aiortc.rtp import RtcpSrPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtc.inbound import parse_rtp
from sfu.rtc.srtp import PROTECT_MAX, SrtpScratch


@pytest.mark.parametrize("cname_size", [37, 38, 39, 40])  # every padding
def test_sender_reports_of_many_streams_split_into_protectable_compounds(cname_size):
    """A subscriber of 40 streams: every SR goes out once, each compound starts
    with SRs and carries their CNAMEs, aiortc parses them back, and each one
    fits what SRTCP protects."""
    from aiortc.rtp import RtcpPacket, RtcpSdesPacket
    from pylibsrtp import Policy, Session

    from sfu.rtc.rtcp import SENDER_REPORT, compound_reports, sdes_packet

    cname = bytes(range(65, 65 + cname_size))
    reports = [
        (
            SENDER_REPORT.pack(0x80, 200, 6, 1000 + i, 1, 2, 3, 4 + i, 5),
            sdes_packet(1000 + i, cname),
        )
        for i in range(40)
    ]
    key = bytes(range(30))
    session = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    seen = []
    packets = compound_reports(reports)
    assert len(packets) > 1
    for data in packets:
        session.protect_rtcp(data)  # raised "packet is too long" as one compound
        parsed = RtcpPacket.parse(data)
        srs = [p for p in parsed if isinstance(p, RtcpSrPacket)]
        assert parsed[: len(srs)] == srs  # SRs first
        sdes = parsed[len(srs) :]
        assert all(isinstance(p, RtcpSdesPacket) for p in sdes)
        assert [c.ssrc for p in sdes for c in p.chunks] == [p.ssrc for p in srs]
        assert all(c.items == [(1, cname)] for p in sdes for c in p.chunks)
        for sr in srs:
            info = sr.sender_info
            assert (info.ntp_timestamp, info.rtp_timestamp) == ((1 << 32) | 2, 3)
            assert (info.packet_count, info.octet_count) == (4 + sr.ssrc - 1000, 5)
        seen += [p.ssrc for p in srs]
    assert seen == [1000 + i for i in range(40)]


def test_srtp_scratch_round_trips_and_refuses_what_does_not_fit():
    """The fast path's own libsrtp calls: what ``protect`` makes, a real
    receiving session opens; a packet longer than an MTU, a replay or a forged
    one is refused (None), never written past the buffer or raised."""
    from aiortc.rtp import RtpPacket
    from pylibsrtp import Policy, Session

    key = bytes(range(30))
    sender = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    receiver = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    scratch = SrtpScratch()
    biggest = RtpPacket(payload_type=111, sequence_number=7, ssrc=5)
    biggest.payload = bytes(range(256)) * 5 + bytes(PROTECT_MAX - 12 - 1280)
    plain = biggest.serialize()
    assert len(plain) == PROTECT_MAX
    protected = bytes(scratch.protect(sender._srtp[0], plain))
    assert len(protected) > len(plain)  # (longer than pylibsrtp would open)
    assert scratch.unprotect(receiver._srtp[0], protected) == plain

    assert scratch.protect(sender._srtp[0], plain + b"\0") is None
    again = RtpPacket(payload_type=111, sequence_number=8, ssrc=5, payload=b"x" * 80)
    sealed = sender.protect(again.serialize())
    assert scratch.unprotect(receiver._srtp[0], sealed) == again.serialize()
    assert scratch.unprotect(receiver._srtp[0], sealed) is None  # a replay
    forged = sender.protect(
        RtpPacket(payload_type=111, sequence_number=9, ssrc=5, payload=b"y").serialize()
    )
    assert scratch.unprotect(receiver._srtp[0], forged[:-1] + b"\0") is None
    assert scratch.unprotect(receiver._srtp[0], b"\x80" * 4000) is None


@settings(max_examples=300, deadline=None)
@given(
    marker=st.integers(0, 1),
    payload_type=st.integers(0, 127),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15),
    mid=st.none() | st.text("0123456789ab", min_size=1, max_size=3),
    level=st.none() | st.tuples(st.booleans(), st.integers(0, 127)),
    abs_send_time=st.none() | st.integers(0, 2**24 - 1),
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
    cut=st.integers(0, 400),
)
def test_lean_rtp_parse_agrees_with_aiortc(
    marker, payload_type, csrc, mid, level, abs_send_time, payload, padding, cut
):
    """The fast path's own RTP parse reads what aiortc's does for every field
    the forwarding uses, and a truncated packet is a ValueError in both."""
    from aiortc.rtcrtpparameters import (
        RTCRtpHeaderExtensionParameters,
        RTCRtpParameters,
    )
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    uris = [
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    ]
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i + 1, uri=uri)
                for i, uri in enumerate(uris)
            ]
        )
    )
    packet = RtpPacket(payload_type, marker, 4242, 960_000, 0xDEADBEEF, payload)
    packet.csrc = csrc
    packet.extensions.mid = mid
    packet.extensions.audio_level = level
    packet.extensions.abs_send_time = abs_send_time
    packet.padding_size = padding if payload else 0
    data = packet.serialize(extensions)
    ids = extensions._HeaderExtensionsMap__ids
    for sample in (data, data[: cut % (len(data) + 1)]):
        try:
            expected = RtpPacket.parse(sample, extensions)
        except ValueError:
            with pytest.raises(ValueError):
                parse_rtp(sample, ids)
            continue
        got = parse_rtp(sample, ids)
        for field in (
            "marker",
            "payload_type",
            "sequence_number",
            "timestamp",
            "ssrc",
            "csrc",
            "payload",
            "padding_size",
        ):
            assert getattr(got, field) == getattr(expected, field), field
        assert got.extensions.audio_level == expected.extensions.audio_level
        assert got.extensions.abs_send_time == expected.extensions.abs_send_time
