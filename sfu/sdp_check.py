"""Validate client SDP before it touches a peer connection.

aiortc applies a description step by step and can be left half-changed by one it
rejects late, so every check a bad offer or answer could fail runs here first and
becomes a precise ``BadSdp``/``BadRequest`` instead of a broken session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import sdp
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from .errors import BadRequest, BadSdp

FINGERPRINT_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
_HEX_PAIRS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*$")
SENDING = ("sendonly", "sendrecv")
SOURCE_KIND = {"microphone": "audio", "screen": "video"}
MAX_MEDIA = 8  # m-lines in a publish offer
#: ICE candidates of one connection, in its SDP and trickled together: each
#: one costs connectivity checks (a 3,000-candidate SDP stalled the loop 1.3 s)
MAX_CANDIDATES = 64
#: SSRCs one publish offer may declare (a=ssrc): each is admitted in C
MAX_SSRCS = 8
#: video codecs a screen may use, most preferred first
VIDEO_PREFERENCE = ("video/vp8", "video/h264")
#: Opus parameters an offer may ask for that the answer keeps (contract 1.1):
#: in-band FEC hides loss, DTX sends little in silence
OPUS_KEPT = ("useinbandfec", "usedtx")


@dataclass(frozen=True)
class OfferedMedia:
    mid: str
    kind: str
    sending: bool
    codec: RTCRtpCodecParameters | None
    #: the SSRCs it declares (a=ssrc), RTX included
    ssrcs: tuple[int, ...] = ()


def codec_key(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> tuple[str, str]:
    """What must match for two codec descriptions to be the same stream format."""
    profile = str(codec.parameters.get("profile-level-id", "")).lower()[:2]
    return codec.mimeType.lower(), profile


def candidates(text: str) -> int:
    """The distinct ICE candidates an SDP carries (a bundled description may
    repeat them in every m-line)."""
    return len(
        {line.strip() for line in text.split("\n") if line.startswith("a=candidate:")}
    )


def parse(text: str) -> sdp.SessionDescription:
    """Parse a client's SDP (``BadSdp`` if it is not one, or carries more
    candidates than a connection may have)."""
    found = candidates(text)
    if found > MAX_CANDIDATES:
        raise BadSdp(
            f"{found} ICE candidates; a connection may have at most {MAX_CANDIDATES}"
        )
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # the parser raises anything on garbage
        raise BadSdp(f"unparsable SDP: {type(exc).__name__}: {exc}") from None
    if not description.media:
        raise BadSdp("SDP has no m-line")
    return description


def _check_transport(media: sdp.MediaDescription, index: int) -> None:
    where = f"m-line {index} ({media.kind})"
    if media.kind not in ("audio", "video"):
        raise BadSdp(f"{where}: only audio and video are accepted")
    if not media.rtp.muxId:
        raise BadSdp(f"{where}: missing a=mid")
    if media.port == 0:
        return  # rejected/stopped m-line: no transport needed
    if media.direction is None:
        raise BadSdp(
            f"{where}: no direction (a=sendonly, sendrecv, recvonly, inactive)"
        )
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        raise BadSdp(f"{where}: missing a=ice-ufrag / a=ice-pwd")
    if media.dtls is None or not media.dtls.fingerprints:
        raise BadSdp(f"{where}: missing a=fingerprint")
    for fp in media.dtls.fingerprints:
        size = FINGERPRINT_BYTES.get(fp.algorithm.lower())
        if (
            size is None
            or not _HEX_PAIRS.match(fp.value)
            or len(fp.value) != 3 * size - 1
        ):
            raise BadSdp(f"{where}: bad fingerprint {fp.algorithm} {fp.value[:40]}")
    if not media.rtcp_mux:
        raise BadSdp(f"{where}: a=rtcp-mux is required")


def choose_codec(media: sdp.MediaDescription) -> RTCRtpCodecParameters | None:
    """The codec we will receive on this m-line: Opus, else VP8, else H264."""
    common = [
        c
        for c in find_common_codecs(CODECS[media.kind], media.rtp.codecs)
        if c.mimeType.lower() != f"{media.kind}/rtx"
    ]
    if media.kind == "audio":
        opus = next((c for c in common if c.mimeType.lower() == "audio/opus"), None)
        if opus is not None:
            asked = {
                k: v
                for c in media.rtp.codecs
                if c.payloadType == opus.payloadType
                for k, v in c.parameters.items()
            }
            opus.parameters = {k: 1 for k in OPUS_KEPT if str(asked.get(k)) == "1"}
        return opus
    for mime in VIDEO_PREFERENCE:
        for codec in common:
            if codec.mimeType.lower() == mime:
                return codec
    return None


def check_publish_offer(
    text: str, sources: dict[str, str], previous_mids: list[str]
) -> list[OfferedMedia]:
    """Check a publish offer and the ``sources`` map that names its m-lines."""
    description = parse(text)
    if len(description.media) > MAX_MEDIA:
        raise BadSdp(f"at most {MAX_MEDIA} m-lines per publish offer")
    mids = [m.rtp.muxId for m in description.media]
    if len(set(mids)) != len(mids):
        raise BadSdp("duplicate a=mid values")
    if mids[: len(previous_mids)] != previous_mids:
        raise BadSdp("m-lines of the previous offer were removed or reordered")
    if not any(m.kind == "audio" for m in description.media):
        raise BadSdp("the publish offer has no audio m-line (the microphone)")
    unknown = set(sources) - set(mids)
    if unknown:
        raise BadRequest(f"'sources' names mids not in the SDP: {sorted(unknown)}")
    declared = {s.ssrc for m in description.media for s in m.ssrc}
    if len(declared) > MAX_SSRCS:
        raise BadSdp(f"{len(declared)} SSRCs declared; at most {MAX_SSRCS}")
    offered: list[OfferedMedia] = []
    seen_sources: set[str] = set()
    for index, media in enumerate(description.media):
        _check_transport(media, index)
        sending = media.port != 0 and media.direction in SENDING
        source = sources.get(media.rtp.muxId)
        codec = choose_codec(media) if media.port != 0 else None
        if sending:
            if source is None:
                raise BadRequest(
                    f"m-line {index} sends media but 'sources' does not name mid "
                    f"{media.rtp.muxId}"
                )
            if SOURCE_KIND[source] != media.kind:
                raise BadRequest(
                    f"a {source} must be {SOURCE_KIND[source]}, not {media.kind}"
                )
            if source in seen_sources:
                raise BadRequest(f"at most one {source} per participant")
            seen_sources.add(source)
            if codec is None:
                wanted = "Opus" if media.kind == "audio" else "VP8 or H264"
                raise BadSdp(f"m-line {index} ({media.kind}) offers no {wanted}")
        elif media.port != 0 and codec is None and media.kind == "audio":
            raise BadSdp(f"m-line {index} (audio) offers no Opus")
        ssrcs = tuple(s.ssrc for s in media.ssrc)
        offered.append(OfferedMedia(media.rtp.muxId, media.kind, sending, codec, ssrcs))
    return offered


def check_subscribe_answer(text: str, offer_mids: list[str]) -> None:
    description = parse(text)
    mids = [m.rtp.muxId for m in description.media]
    if mids != offer_mids:
        raise BadSdp(
            f"the answer's m-lines {mids} do not match the offer's {offer_mids}"
        )
    for index, media in enumerate(description.media):
        _check_transport(media, index)
        if media.dtls is not None and media.dtls.role not in ("client", "server"):
            raise BadSdp(f"m-line {index}: a=setup must be active or passive")
