"""Parsing the /ws wire format (signaling-v1; its types and codes are
``miscord_client.protocol``'s, shared with clients).

Every client frame is parsed into one dataclass below or rejected with a
``ProtocolError`` carrying the contract's error code and a precise message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from miscord_client.protocol import (
    ALREADY_JOINED,
    BAD_JSON,
    BAD_MESSAGE,
    BAD_SDP,
    CHANNEL_FULL,
    CHANNEL_ID,
    ERROR_CODES,
    FORBIDDEN,
    INTERNAL,
    KINDS,
    MAX_CANDIDATE,
    MAX_SDP,
    MEDIA_MODES,
    NO_PORTS,
    NOT_JOINED,
    PCS,
    RATE_LIMITED,
    SOURCES,
    TOO_LARGE,
    UNKNOWN_TYPE,
    Close,
    Error,
    Ref,
    ServerMessage,
)

__all__ = [
    "ALREADY_JOINED",
    "BAD_JSON",
    "BAD_MESSAGE",
    "BAD_SDP",
    "CHANNEL_FULL",
    "ERROR_CODES",
    "FORBIDDEN",
    "INTERNAL",
    "NOT_JOINED",
    "NO_PORTS",
    "RATE_LIMITED",
    "TOO_LARGE",
    "UNKNOWN_TYPE",
    "Close",
    "ProtocolError",
    "ServerMessage",
    "parse",
]


class ProtocolError(Exception):
    """A message the server refuses; becomes an ``error`` reply."""

    def __init__(self, code: str, message: str, ref: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True)
class Join:
    token: str
    channel: str
    kind: str


@dataclass(frozen=True)
class Offer:
    pc: str
    sdp: str
    sources: dict[str, str]


@dataclass(frozen=True)
class Answer:
    pc: str
    sdp: str


@dataclass(frozen=True)
class Candidate:
    pc: str
    candidate: dict[str, Any] | None


@dataclass(frozen=True)
class Mute:
    source: str
    muted: bool


@dataclass(frozen=True)
class Leave:
    pass


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Resume:
    """(1.1) Take over a kept participant; an unusable token closes 4410."""

    token: str
    media: str


@dataclass(frozen=True)
class Stats:
    """Client getStats summary (see docs/protocol.md); validated by diagnostics."""

    report: dict[str, Any]


ClientMessage = Join | Offer | Answer | Candidate | Mute | Leave | Ping | Stats | Resume


@dataclass(frozen=True)
class Envelope:
    type: str
    ref: Any
    body: ClientMessage


def _field(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], ref: Any
) -> Any:
    if name not in data:
        raise ProtocolError(BAD_MESSAGE, f"missing field '{name}'", ref)
    value = data[name]
    # bool is an int in Python: refuse it where a number or string is expected
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in _t(kind)
    ):
        raise ProtocolError(
            BAD_MESSAGE, f"field '{name}' must be {_describe(kind)}", ref
        )
    return value


def _t(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _describe(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "a boolean", dict: "an object", int: "an integer"}
    names[type(None)] = "null"
    return " or ".join(names.get(k, k.__name__) for k in _t(kind))


def _choice(data: dict[str, Any], name: str, choices: tuple[str, ...], ref: Any) -> str:
    value = _field(data, name, str, ref)
    if value not in choices:
        raise ProtocolError(
            BAD_MESSAGE, f"field '{name}' must be one of {', '.join(choices)}", ref
        )
    return value


def _sdp(data: dict[str, Any], ref: Any) -> str:
    sdp = _field(data, "sdp", str, ref)
    if not sdp.strip():
        raise ProtocolError(BAD_SDP, "field 'sdp' is empty", ref)
    if len(sdp) > MAX_SDP:
        raise ProtocolError(BAD_SDP, f"sdp is longer than {MAX_SDP} characters", ref)
    return sdp


def _join(data: dict[str, Any], ref: Any) -> Join:
    # no string token is an auth failure (close 4401), not a bad message
    token = data.get("token")
    token = token if isinstance(token, str) else ""
    channel = _field(data, "channel", str, ref)
    if not CHANNEL_ID.match(channel):
        raise ProtocolError(
            BAD_MESSAGE,
            "field 'channel' must be 1-64 characters of A-Z a-z 0-9 _ . : -",
            ref,
        )
    return Join(token=token, channel=channel, kind=_choice(data, "kind", KINDS, ref))


def _offer(data: dict[str, Any], ref: Any) -> Offer:
    pc = _choice(data, "pc", PCS, ref)
    sdp = _sdp(data, ref)
    sources = _field(data, "sources", dict, ref)
    for mid, source in sources.items():
        if source not in SOURCES or len(mid) > 32:
            raise ProtocolError(
                BAD_MESSAGE,
                "field 'sources' maps each mid to 'microphone' or 'screen'",
                ref,
            )
    return Offer(pc=pc, sdp=sdp, sources=dict(sources))


def _answer(data: dict[str, Any], ref: Any) -> Answer:
    return Answer(pc=_choice(data, "pc", PCS, ref), sdp=_sdp(data, ref))


def _candidate(data: dict[str, Any], ref: Any) -> Candidate:
    pc = _choice(data, "pc", PCS, ref)
    cand = _field(data, "candidate", (dict, type(None)), ref)
    if cand is not None:
        text = _field(cand, "candidate", str, ref)
        if len(text) > MAX_CANDIDATE:
            raise ProtocolError(BAD_MESSAGE, "candidate is too long", ref)
        mid = cand.get("sdpMid")
        index = cand.get("sdpMLineIndex")
        if mid is not None and not isinstance(mid, str):
            raise ProtocolError(BAD_MESSAGE, "field 'sdpMid' must be a string", ref)
        if index is not None and (
            not isinstance(index, int) or isinstance(index, bool)
        ):
            raise ProtocolError(
                BAD_MESSAGE, "field 'sdpMLineIndex' must be an integer", ref
            )
        cand = {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index}
    return Candidate(pc=pc, candidate=cand)


def _mute(data: dict[str, Any], ref: Any) -> Mute:
    return Mute(
        source=_choice(data, "source", SOURCES, ref),
        muted=_field(data, "muted", bool, ref),
    )


def _resume(data: dict[str, Any], ref: Any) -> Resume:
    # no string token is a refused resume (close 4410), not a bad message
    token = data.get("resume_token")
    media = data.get("media", "keep")
    if media not in MEDIA_MODES:
        raise ProtocolError(
            BAD_MESSAGE, f"field 'media' must be one of {', '.join(MEDIA_MODES)}", ref
        )
    return Resume(token=token if isinstance(token, str) else "", media=media)


def _stats(data: dict[str, Any], ref: Any) -> Stats:
    return Stats(report=_field(data, "report", dict, ref))


PARSERS: dict[str, Callable[[dict[str, Any], Any], ClientMessage]] = {
    "join": _join,
    "offer": _offer,
    "answer": _answer,
    "candidate": _candidate,
    "mute": _mute,
    "leave": lambda data, ref: Leave(),
    "ping": lambda data, ref: Ping(),
    "stats": _stats,
    "resume": _resume,
}


def parse(text: str) -> Envelope:
    """Parse one text frame or raise ``ProtocolError``."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object")
    ref = data.get("id")
    if ref is not None and (
        isinstance(ref, bool) or not isinstance(ref, (str, int)) or len(str(ref)) > 64
    ):
        raise ProtocolError(BAD_MESSAGE, "field 'id' must be a short string or integer")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, "missing string field 'type'", ref)
    parser = PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}", ref)
    return Envelope(type=kind, ref=ref, body=parser(data, ref))


def error(code: str, message: str, ref: Ref = None) -> Error:
    return {"type": "error", "code": code, "message": message, "ref": ref}
