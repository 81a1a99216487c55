"""Recognise the first packet of a keyframe in VP8 and H264 RTP payloads."""

from __future__ import annotations


def vp8_keyframe(payload: bytes) -> bool:
    """RFC 7741: the start of partition 0 of a frame whose P bit is 0."""
    if len(payload) < 2:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S=1 and PID=0
        return False
    pos = 1
    if first & 0x80:  # X: extension byte
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if pos >= len(payload):
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K
            pos += 1
    return pos < len(payload) and not payload[pos] & 0x01


def h264_keyframe(payload: bytes) -> bool:
    """RFC 6184: an IDR slice or SPS, alone, aggregated or as a first fragment."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A
        pos = 1
        while pos + 2 < len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            if payload[pos + 2] & 0x1F in (5, 7):
                return True
            pos += 2 + size
        return False
    if nal == 28 and len(payload) > 1:  # FU-A: the start fragment of an IDR
        return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
    return False


def is_keyframe(mime_type: str, payload: bytes) -> bool:
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_keyframe(payload)
    if mime == "video/h264":
        return h264_keyframe(payload)
    return False
