"""``sfu.sdp_check``: client SDP checked before it touches a peer connection.

``parse`` (garbage, no m-line, too many distinct candidates), ``candidates``,
``check_publish_offer`` (each refusal, and the ``OfferedMedia`` of a valid
offer), ``check_subscribe_answer``, ``codec_key`` and ``choose_codec``. SDP is
written by hand: a minimal browser-like description per test.
"""

from __future__ import annotations

import pytest
from aiortc import sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from sfu import sdp_check
from sfu.errors import BadRequest, BadSdp
from sfu.sdp_check import (
    MAX_CANDIDATES,
    MAX_MEDIA,
    MAX_SSRCS,
    OfferedMedia,
    check_publish_offer,
    check_subscribe_answer,
    choose_codec,
    codec_key,
)

FINGERPRINT = "sha-256 " + ":".join(f"{i:02X}" for i in range(32))
OPUS = ["111 opus/48000/2"]
VP8 = ["96 VP8/90000"]
H264 = ["102 H264/90000"]
H264_FMTP = (
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
)
MIC = {"0": "microphone"}


def m_line(
    kind: str,
    mid: str,
    *,
    direction: str | None = "sendonly",
    codecs: list[str] | None = None,
    ssrcs: tuple[int, ...] = (),
    port: int = 9,
    ice: bool = True,
    fingerprint: str | None = FINGERPRINT,
    rtcp_mux: bool = True,
    setup: str = "actpass",
    extra: tuple[str, ...] = (),
) -> list[str]:
    """One m-line section as a browser writes it (only what aiortc reads)."""
    if codecs is None:
        codecs = OPUS if kind == "audio" else VP8
    payload_types = " ".join(c.split()[0] for c in codecs)
    lines = [f"m={kind} {port} UDP/TLS/RTP/SAVPF {payload_types}", "c=IN IP4 0.0.0.0"]
    if ice:
        lines += ["a=ice-ufrag:Ab1c", "a=ice-pwd:abcdefghijklmnopqrstuvwx"]
    if fingerprint:
        lines.append(f"a=fingerprint:{fingerprint}")
    lines += [f"a=setup:{setup}", f"a=mid:{mid}"]
    if direction:
        lines.append(f"a={direction}")
    if rtcp_mux:
        lines.append("a=rtcp-mux")
    lines += [f"a=rtpmap:{c}" for c in codecs]
    lines += [f"a=ssrc:{s} cname:abc" for s in ssrcs]
    lines += list(extra)
    return lines


def description(*sections: list[str]) -> str:
    head = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    return "\r\n".join(head + [line for s in sections for line in s]) + "\r\n"


def audio(mid: str = "0", **kwargs: object) -> list[str]:
    return m_line("audio", mid, **kwargs)  # type: ignore[arg-type]


def video(mid: str = "1", **kwargs: object) -> list[str]:
    return m_line("video", mid, **kwargs)  # type: ignore[arg-type]


def candidate_lines(first: int, count: int) -> tuple[str, ...]:
    return tuple(
        f"a=candidate:{i} 1 udp 2122260223 10.0.{i // 250}.{i % 250} 5000 typ host"
        for i in range(first, first + count)
    )


def bad_sdp(
    text: str, sources: dict[str, str], previous: list[str] | None = None
) -> str:
    with pytest.raises(BadSdp) as info:
        check_publish_offer(text, sources, previous or [])
    assert info.value.code == "bad_sdp"
    return info.value.message


def bad_request(
    text: str, sources: dict[str, str], previous: list[str] | None = None
) -> str:
    with pytest.raises(BadRequest) as info:
        check_publish_offer(text, sources, previous or [])
    assert info.value.code == "bad_message"
    return info.value.message


# --- parse / candidates -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["m=audio x\r\n", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:zz\r\n"],
    ids=["short-m-line", "bad-rtpmap"],
)
def test_parse_garbage_is_bad_sdp(text):
    with pytest.raises(BadSdp, match="unparsable SDP"):
        sdp_check.parse(text)


@pytest.mark.parametrize("text", ["", "hello", "v=0\r\ns=-\r\nt=0 0\r\n"])
def test_parse_without_m_line_is_bad_sdp(text):
    with pytest.raises(BadSdp, match="no m-line"):
        sdp_check.parse(text)


def test_parse_valid_description():
    parsed = sdp_check.parse(description(audio(), video()))
    assert [m.kind for m in parsed.media] == ["audio", "video"]


def test_parse_refuses_more_than_max_candidates():
    text = description(audio(extra=candidate_lines(0, MAX_CANDIDATES + 1)))
    with pytest.raises(BadSdp, match=f"{MAX_CANDIDATES + 1} ICE candidates"):
        sdp_check.parse(text)


def test_parse_counts_candidates_repeated_across_m_lines_once():
    shared = candidate_lines(0, 40)
    text = description(
        audio(extra=shared), video(extra=shared + candidate_lines(40, 24))
    )
    assert sdp_check.candidates(text) == MAX_CANDIDATES
    assert len(sdp_check.parse(text).media) == 2


def test_parse_counts_a_distinct_candidate_beyond_the_limit():
    shared = candidate_lines(0, 40)
    text = description(
        audio(extra=shared), video(extra=shared + candidate_lines(40, 25))
    )
    with pytest.raises(BadSdp, match="65 ICE candidates"):
        sdp_check.parse(text)


def test_candidates_counts_distinct_candidate_lines_only():
    text = "a=candidate:1 x\r\na=candidate:1 x\na=candidate:2 y\r\na=mid:0\r\n"
    assert sdp_check.candidates(text) == 2


def test_candidates_ignores_candidate_text_not_at_line_start():
    assert sdp_check.candidates(" a=candidate:1 x\nx=a=candidate:2\n") == 0


# --- check_publish_offer: a valid offer -------------------------------------------


def test_valid_offer_gives_offered_media():
    text = description(
        audio("0", ssrcs=(1111, 2222)),
        video("1", codecs=[*VP8, "97 rtx/90000"], ssrcs=(3333, 4444)),
    )
    offered = check_publish_offer(text, {"0": "microphone", "1": "screen"}, [])
    assert [(o.mid, o.kind, o.sending, o.ssrcs) for o in offered] == [
        ("0", "audio", True, (1111, 2222)),
        ("1", "video", True, (3333, 4444)),
    ]
    assert offered[0].codec.mimeType.lower() == "audio/opus"
    assert offered[0].codec.payloadType == 111
    assert offered[1].codec.mimeType.lower() == "video/vp8"


def test_valid_audio_only_offer():
    (only,) = check_publish_offer(description(audio()), MIC, [])
    assert only == OfferedMedia(
        mid="0", kind="audio", sending=True, codec=only.codec, ssrcs=()
    )
    assert only.codec is not None


def test_recvonly_m_line_needs_no_source():
    offered = check_publish_offer(
        description(audio(), video(direction="recvonly")), MIC, []
    )
    assert offered[1].sending is False
    assert offered[1].codec is not None


def test_inactive_video_without_codec_is_accepted():
    offered = check_publish_offer(
        description(audio(), video(direction="inactive", codecs=["98 VP9/90000"])),
        MIC,
        [],
    )
    assert (offered[1].sending, offered[1].codec) == (False, None)


def test_stopped_m_line_skips_transport_checks():
    text = description(
        audio(), video(port=0, ice=False, fingerprint=None, rtcp_mux=False)
    )
    offered = check_publish_offer(text, {"0": "microphone", "1": "screen"}, [])
    assert (offered[1].sending, offered[1].codec) == (False, None)


def test_offer_may_append_to_previous_mids():
    offered = check_publish_offer(
        description(audio("0"), video("1")), {"0": "microphone", "1": "screen"}, ["0"]
    )
    assert [o.mid for o in offered] == ["0", "1"]


def test_h264_only_screen_is_accepted():
    offered = check_publish_offer(
        description(audio(), video(codecs=H264, extra=(H264_FMTP,))),
        {"0": "microphone", "1": "screen"},
        [],
    )
    assert offered[1].codec.mimeType.lower() == "video/h264"


def test_sha_384_fingerprint_is_accepted():
    fingerprint = "sha-384 " + ":".join(["0a"] * 48)
    assert check_publish_offer(description(audio(fingerprint=fingerprint)), MIC, [])


# --- check_publish_offer: refusals ------------------------------------------------


def test_too_many_m_lines():
    sections = [audio("0")] + [video(str(i), direction="recvonly") for i in range(1, 9)]
    assert len(sections) == MAX_MEDIA + 1
    assert f"at most {MAX_MEDIA} m-lines" in bad_sdp(description(*sections), MIC)


def test_duplicate_mids():
    text = description(audio("0"), video("0", direction="recvonly"))
    assert "duplicate a=mid" in bad_sdp(text, MIC)


PREVIOUS = ["0", "1"]


@pytest.mark.parametrize(
    "sections",
    [
        [audio("0")],
        [video("1", direction="recvonly"), audio("0")],
        [audio("0"), video("2", direction="recvonly")],
    ],
    ids=["removed", "reordered", "replaced"],
)
def test_previous_mids_must_stay_in_place(sections):
    message = bad_sdp(description(*sections), MIC, PREVIOUS)
    assert "removed or reordered" in message


def test_no_audio_m_line():
    text = description(video("0"))
    assert "no audio m-line" in bad_sdp(text, {"0": "screen"})


def test_sources_naming_unknown_mids():
    message = bad_request(description(audio()), {"0": "microphone", "7": "screen"})
    assert "['7']" in message


def test_missing_mid():
    lines = [line for line in audio() if not line.startswith("a=mid")]
    assert "missing a=mid" in bad_sdp(description(lines), {})


def test_missing_direction():
    assert "no direction" in bad_sdp(description(audio(direction=None)), MIC)


def test_missing_ice_credentials():
    assert "a=ice-ufrag" in bad_sdp(description(audio(ice=False)), MIC)


def test_missing_fingerprint():
    assert "missing a=fingerprint" in bad_sdp(description(audio(fingerprint=None)), MIC)


@pytest.mark.parametrize(
    "fingerprint",
    [
        "sha-256 " + ":".join(["AB"] * 31),
        "sha-256 " + ":".join(["AB"] * 33),
        "sha-256 " + ":".join(["ZZ"] * 32),
        "sha-256 " + "AB" * 32,
        "md5 " + ":".join(["AB"] * 16),
        "sha-1 " + ":".join(["AB"] * 20),
    ],
    ids=["short", "long", "not-hex", "no-colons", "md5", "sha-1"],
)
def test_bad_fingerprint(fingerprint):
    assert "bad fingerprint" in bad_sdp(
        description(audio(fingerprint=fingerprint)), MIC
    )


def test_missing_rtcp_mux():
    assert "rtcp-mux" in bad_sdp(description(audio(rtcp_mux=False)), MIC)


@pytest.mark.parametrize("direction", ["sendonly", "sendrecv"])
def test_sending_m_line_without_source(direction):
    text = description(audio(), video(direction=direction))
    assert "does not name mid 1" in bad_request(text, MIC)


def test_microphone_on_a_video_m_line():
    text = description(audio(), video())
    message = bad_request(text, {"0": "microphone", "1": "microphone"})
    assert "a microphone must be audio, not video" in message


def test_screen_on_an_audio_m_line():
    assert "a screen must be video" in bad_request(
        description(audio()), {"0": "screen"}
    )


def test_two_microphones():
    text = description(audio("0"), audio("1"))
    message = bad_request(text, {"0": "microphone", "1": "microphone"})
    assert "at most one microphone" in message


def test_two_screens():
    text = description(audio("0"), video("1"), video("2"))
    sources = {"0": "microphone", "1": "screen", "2": "screen"}
    assert "at most one screen" in bad_request(text, sources)


def test_sending_audio_without_opus():
    text = description(audio(codecs=["0 PCMU/8000", "8 PCMA/8000"]))
    assert "offers no Opus" in bad_sdp(text, MIC)


def test_receiving_audio_without_opus():
    text = description(
        audio(), audio("1", direction="recvonly", codecs=["0 PCMU/8000"])
    )
    assert "m-line 1 (audio) offers no Opus" in bad_sdp(text, MIC)


def test_sending_video_without_vp8_or_h264():
    text = description(audio(), video(codecs=["98 VP9/90000", "45 AV1/90000"]))
    message = bad_sdp(text, {"0": "microphone", "1": "screen"})
    assert "offers no VP8 or H264" in message


def test_more_than_max_ssrcs():
    ssrcs = tuple(range(1, MAX_SSRCS + 2))
    message = bad_sdp(description(audio(ssrcs=ssrcs)), MIC)
    assert f"{MAX_SSRCS + 1} SSRCs declared" in message


def test_max_ssrcs_over_two_m_lines_is_accepted():
    text = description(audio(ssrcs=(1, 2, 3, 4)), video(ssrcs=(5, 6, 7, 8)))
    offered = check_publish_offer(text, {"0": "microphone", "1": "screen"}, [])
    assert sum(len(o.ssrcs) for o in offered) == MAX_SSRCS


def test_ssrc_repeated_in_attributes_counts_once():
    extra = tuple(f"a=ssrc:{s} msid:stream track" for s in range(1, 9))
    text = description(audio(ssrcs=tuple(range(1, 9)), extra=extra))
    (only,) = check_publish_offer(text, MIC, [])
    assert only.ssrcs == tuple(range(1, 9))


def test_non_media_m_line():
    lines = ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:1"]
    assert "only audio and video" in bad_sdp(description(audio(), lines), MIC)


# --- check_subscribe_answer -------------------------------------------------------


@pytest.mark.parametrize("setup", ["active", "passive"])
def test_valid_subscribe_answer(setup):
    text = description(
        audio("0", direction="recvonly", setup=setup),
        video("1", direction="recvonly", setup=setup),
    )
    assert check_subscribe_answer(text, ["0", "1"]) is None


@pytest.mark.parametrize(
    "offer_mids", [["0"], ["0", "1", "2"], ["1", "0"], []], ids=repr
)
def test_subscribe_answer_mid_mismatch(offer_mids):
    text = description(
        audio("0", direction="recvonly"), video("1", direction="recvonly")
    )
    with pytest.raises(BadSdp, match="do not match the offer"):
        check_subscribe_answer(text, offer_mids)


def test_subscribe_answer_actpass_setup_is_refused():
    text = description(audio("0", direction="recvonly", setup="actpass"))
    with pytest.raises(BadSdp, match="a=setup must be active or passive"):
        check_subscribe_answer(text, ["0"])


def test_subscribe_answer_transport_is_checked():
    text = description(audio("0", direction="recvonly", setup="active", rtcp_mux=False))
    with pytest.raises(BadSdp, match="rtcp-mux"):
        check_subscribe_answer(text, ["0"])


# --- codec_key / choose_codec -----------------------------------------------------


def test_codec_key_lowercases_and_keeps_profile_prefix():
    codec = RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=102,
        parameters={"profile-level-id": "42E01F", "packetization-mode": "1"},
    )
    assert codec_key(codec) == ("video/h264", "42")


def test_codec_key_without_profile():
    codec = RTCRtpCodecCapability(mimeType="audio/OPUS", clockRate=48000, channels=2)
    assert codec_key(codec) == ("audio/opus", "")


def test_codec_key_differs_by_profile():
    def h264(profile: str) -> RTCRtpCodecParameters:
        return RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=102,
            parameters={"profile-level-id": profile},
        )

    assert codec_key(h264("42e01f")) != codec_key(h264("640c1f"))
    assert codec_key(h264("42e01f")) == codec_key(h264("42001f"))


def media_of(section: list[str]) -> sdp.MediaDescription:
    return sdp.SessionDescription.parse(description(section)).media[0]


def test_choose_codec_prefers_vp8_over_earlier_h264():
    section = video(codecs=H264 + VP8, extra=(H264_FMTP,))
    assert choose_codec(media_of(section)).mimeType.lower() == "video/vp8"


def test_choose_codec_h264_when_no_vp8():
    section = video(codecs=["98 VP9/90000", *H264], extra=(H264_FMTP,))
    assert choose_codec(media_of(section)).mimeType.lower() == "video/h264"


def test_choose_codec_never_rtx():
    section = video(
        codecs=["97 rtx/90000", "98 VP9/90000"], extra=("a=fmtp:97 apt=98",)
    )
    assert choose_codec(media_of(section)) is None


def test_choose_codec_opus_among_other_audio():
    section = audio(codecs=["0 PCMU/8000", "111 opus/48000/2", "8 PCMA/8000"])
    codec = choose_codec(media_of(section))
    assert (codec.mimeType.lower(), codec.payloadType) == ("audio/opus", 111)


def test_choose_codec_audio_without_opus():
    assert choose_codec(media_of(audio(codecs=["0 PCMU/8000"]))) is None


# --- Opus FEC and DTX (contract 1.1) ------------------------------------------------


@pytest.mark.parametrize(
    ("fmtp", "kept"),
    [
        ("minptime=10;useinbandfec=1;usedtx=1", {"useinbandfec": 1, "usedtx": 1}),
        ("minptime=10;useinbandfec=1", {"useinbandfec": 1}),
        ("usedtx=1;stereo=1", {"usedtx": 1}),
        ("useinbandfec=0;usedtx=0", {}),
        (None, {}),
    ],
    ids=["fec-dtx", "fec", "dtx-last", "off", "no-fmtp"],
)
def test_choose_codec_keeps_the_opus_loss_parameters_asked_for(fmtp, kept):
    extra = (f"a=fmtp:111 {fmtp}",) if fmtp else ()
    codec = choose_codec(media_of(audio(extra=extra)))
    assert codec.parameters == kept


def test_choose_codec_takes_parameters_of_the_chosen_payload_type_only():
    section = audio(
        codecs=["111 opus/48000/2", "63 red/48000/2"],
        extra=("a=fmtp:63 useinbandfec=1",),
    )
    assert choose_codec(media_of(section)).parameters == {}
