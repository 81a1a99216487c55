"""``sfu.keyframes``: the first packet of a keyframe recognised in VP8 (RFC 7741
payload descriptor: S, PID, X/I/L/T/K extension bytes, 7- or 15-bit picture id,
then the P bit) and H264 (RFC 6184: IDR, SPS, STAP-A, FU-A) payloads, and the
``is_keyframe`` dispatch by MIME type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.keyframes import h264_keyframe, is_keyframe, vp8_keyframe

# VP8 payload descriptor bits
X, S = 0x80, 0x10
I, L, T, K = 0x80, 0x40, 0x20, 0x10  # noqa: E741
KEY, INTER = 0x00, 0x01  # first byte of the VP8 payload header: P bit


def vp8(*descriptor: int, header: int = KEY) -> bytes:
    return bytes([*descriptor, header, 0x00, 0x9D])


# --- VP8 --------------------------------------------------------------------------


def test_vp8_minimal_keyframe():
    assert vp8_keyframe(vp8(S))


def test_vp8_interframe_p_bit():
    assert not vp8_keyframe(vp8(S, header=INTER))


def test_vp8_not_start_of_partition():
    assert not vp8_keyframe(vp8(0x00))


@pytest.mark.parametrize("pid", [1, 2, 7])
def test_vp8_partition_other_than_zero(pid):
    assert not vp8_keyframe(vp8(S | pid))


def test_vp8_n_bit_does_not_matter():
    assert vp8_keyframe(vp8(S | 0x20))


@pytest.mark.parametrize("payload", [b"", b"\x10"], ids=["empty", "one-byte"])
def test_vp8_too_short(payload):
    assert not vp8_keyframe(payload)


def test_vp8_seven_bit_picture_id():
    assert vp8_keyframe(vp8(X | S, I, 0x05))
    assert not vp8_keyframe(vp8(X | S, I, 0x05, header=INTER))


def test_vp8_fifteen_bit_picture_id_skips_two_bytes():
    # the second picture id byte has its low bit set: read as the payload
    # header it would be an interframe
    assert vp8_keyframe(vp8(X | S, I, 0x80 | 0x12, 0x35))
    assert not vp8_keyframe(vp8(X | S, I, 0x80 | 0x12, 0x34, header=INTER))


def test_vp8_tl0picidx_is_skipped():
    assert vp8_keyframe(vp8(X | S, L, 0x01))


@pytest.mark.parametrize("flags", [T, K, T | K], ids=["T", "K", "TK"])
def test_vp8_tid_keyidx_byte_is_skipped_once(flags):
    assert vp8_keyframe(vp8(X | S, flags, 0x01))
    assert not vp8_keyframe(vp8(X | S, flags, 0x00, header=INTER))


def test_vp8_all_extensions():
    assert vp8_keyframe(vp8(X | S, I | L | T | K, 0x81, 0x01, 0x01, 0x01))
    assert not vp8_keyframe(vp8(X | S, I | L | T | K, 0x81, 0x00, 0x00, 0x00, header=1))


def test_vp8_extension_without_flags():
    assert vp8_keyframe(vp8(X | S, 0x00))


def test_vp8_picture_id_missing():
    assert not vp8_keyframe(bytes([X | S, I]))


@pytest.mark.parametrize(
    "payload",
    [bytes([X | S, I, 0x05]), bytes([X | S, L, 0x00]), bytes([X | S, I, 0x85, 0x00])],
    ids=["after-7-bit-id", "after-tl0", "after-15-bit-id"],
)
def test_vp8_descriptor_without_payload_header(payload):
    assert not vp8_keyframe(payload)


@given(st.binary(max_size=12))
def test_vp8_never_raises(payload):
    assert vp8_keyframe(payload) in (True, False)


# --- H264 -------------------------------------------------------------------------

IDR, SPS, PPS, SLICE = 0x65, 0x67, 0x68, 0x41  # with NRI bits


@pytest.mark.parametrize("nal", [IDR, SPS, 0x05, 0x07], ids=hex)
def test_h264_single_idr_or_sps(nal):
    assert h264_keyframe(bytes([nal, 0x88, 0x84]))


@pytest.mark.parametrize("nal", [SLICE, PPS, 0x06, 0x09], ids=hex)
def test_h264_single_other_nal(nal):
    assert not h264_keyframe(bytes([nal, 0x9A, 0x02]))


def test_h264_empty():
    assert not h264_keyframe(b"")


def stap_a(*nals: bytes) -> bytes:
    out = bytearray([0x78])
    for nal in nals:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def test_h264_stap_a_with_sps_first():
    assert h264_keyframe(stap_a(bytes([SPS, 0x42, 0xE0]), bytes([PPS, 0xCE])))


def test_h264_stap_a_with_idr_after_other_nals():
    assert h264_keyframe(
        stap_a(bytes([0x06, 0x05, 0x01]), bytes([PPS, 0xCE]), bytes([IDR, 0x88]))
    )


def test_h264_stap_a_without_idr():
    assert not h264_keyframe(stap_a(bytes([PPS, 0xCE]), bytes([SLICE, 0x9A])))


def test_h264_stap_a_size_skips_whole_nal():
    # the first NAL's payload byte 0x65 is not a NAL header
    assert not h264_keyframe(stap_a(bytes([SLICE, IDR, IDR]), bytes([SLICE])))


@pytest.mark.parametrize(
    "payload", [b"\x78", b"\x78\x00", b"\x78\x00\x01"], ids=["header", "1", "2"]
)
def test_h264_stap_a_truncated(payload):
    assert not h264_keyframe(payload)


def test_h264_fu_a_start_of_idr():
    assert h264_keyframe(bytes([0x7C, 0x80 | 0x05, 0x88]))


def test_h264_fu_a_continuation_of_idr():
    assert not h264_keyframe(bytes([0x7C, 0x05, 0x88]))


def test_h264_fu_a_end_of_idr():
    assert not h264_keyframe(bytes([0x7C, 0x40 | 0x05, 0x88]))


def test_h264_fu_a_start_of_non_idr():
    assert not h264_keyframe(bytes([0x7C, 0x80 | 0x01, 0x88]))


def test_h264_fu_a_without_fu_header():
    assert not h264_keyframe(b"\x7c")


@given(st.binary(max_size=24))
def test_h264_never_raises(payload):
    assert h264_keyframe(payload) in (True, False)


# --- dispatch ---------------------------------------------------------------------

VP8_KEY = vp8(S)  # an H264 NAL of type 16: not a keyframe
H264_IDR = bytes([IDR, 0x88, 0x84])  # VP8 S=0: not a keyframe


@pytest.mark.parametrize("mime", ["video/VP8", "video/vp8", "VIDEO/VP8"])
def test_is_keyframe_vp8(mime):
    assert is_keyframe(mime, VP8_KEY)
    assert not is_keyframe(mime, H264_IDR)


@pytest.mark.parametrize("mime", ["video/H264", "video/h264"])
def test_is_keyframe_h264(mime):
    assert is_keyframe(mime, H264_IDR)
    assert not is_keyframe(mime, VP8_KEY)


@pytest.mark.parametrize("mime", ["audio/opus", "video/VP9", "video/rtx", ""])
def test_is_keyframe_other_codecs_never(mime):
    assert not is_keyframe(mime, VP8_KEY)
    assert not is_keyframe(mime, H264_IDR)
