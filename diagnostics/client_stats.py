"""The clients' ``stats`` messages: validated, trimmed to known fields, kept.

Only the client knows concealment, playout and the microphone track's state
(docs/protocol.md, "Extension: stats"). A report is untrusted input: every
field is optional, unknown fields are dropped, wrong types are refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: reports closer together than this are refused (one per second, with slack
#: for timer drift)
MIN_SPACING = 0.9
#: entries per list: a channel holds at most ``max_participants`` (99) peers
MAX_ENTRIES = 128

OUTBOUND_NUMBERS = (
    "packetsSent",
    "bytesSent",
    "audioLevel",
    "totalAudioEnergy",
    "totalSamplesDuration",
)
OUTBOUND_FLAGS = ("trackMuted", "trackEnabled")
INBOUND_NUMBERS = (
    "packetsReceived",
    "packetsLost",
    "jitter",
    "jitterBufferDelay",
    "jitterBufferEmittedCount",
    "concealedSamples",
    "totalSamplesReceived",
    "totalAudioEnergy",
    "audioLevel",
    # not W3C: the listener's own view of delay variation (the Python client)
    "relativeDelayP95",
    "packetsReordered",
    "packetsLate",
)


class ClientStatsError(ValueError):
    """A refused report; ``code`` is the contract's error code."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ClientOutbound:
    source: str
    numbers: dict[str, float]
    flags: dict[str, bool | None]
    ready_state: str | None


@dataclass(frozen=True, slots=True)
class ClientInbound:
    peer_id: str
    source: str
    numbers: dict[str, float]


@dataclass(frozen=True, slots=True)
class ClientReport:
    received_at: float
    timestamp: float | None
    outbound: tuple[ClientOutbound, ...]
    inbound: tuple[ClientInbound, ...]
    #: candidate-pair RTT in seconds by connection (publish, subscribe)
    rtt: dict[str, float]

    def inbound_from(self, peer_id: str) -> ClientInbound | None:
        return next(
            (
                i
                for i in self.inbound
                if i.peer_id == peer_id and i.source == "microphone"
            ),
            None,
        )

    def microphone(self) -> ClientOutbound | None:
        return next((o for o in self.outbound if o.source == "microphone"), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at,
            "timestamp": self.timestamp,
            "outbound": [
                {
                    "source": o.source,
                    **o.numbers,
                    **o.flags,
                    "trackReadyState": o.ready_state,
                }
                for o in self.outbound
            ],
            "inbound": [
                {"peer_id": i.peer_id, "source": i.source, **i.numbers}
                for i in self.inbound
            ],
            "candidatePair": {
                pc: {"currentRoundTripTime": rtt} for pc, rtt in self.rtt.items()
            },
        }


def _number(entry: dict[str, Any], name: str, where: str) -> float | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientStatsError(f"{where}.{name} must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ClientStatsError(f"{where}.{name} must be finite and not negative")
    return number


def _numbers(entry: dict[str, Any], names: tuple[str, ...], where: str) -> dict:
    values = {name: _number(entry, name, where) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def _text(entry: dict[str, Any], name: str, where: str, default: str | None) -> Any:
    value = entry.get(name, default)
    if value is not None and (not isinstance(value, str) or len(value) > 64):
        raise ClientStatsError(f"{where}.{name} must be a short string")
    return value


def _entries(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = report.get(name, [])
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise ClientStatsError(f"{name} must be a list of at most {MAX_ENTRIES}")
    if not all(isinstance(item, dict) for item in value):
        raise ClientStatsError(f"every {name} entry must be an object")
    return value


def _outbound(entry: dict[str, Any], where: str) -> ClientOutbound:
    flags: dict[str, bool | None] = {}
    for name in OUTBOUND_FLAGS:
        value = entry.get(name)
        if value is not None and not isinstance(value, bool):
            raise ClientStatsError(f"{where}.{name} must be true, false or null")
        flags[name] = value
    return ClientOutbound(
        source=_text(entry, "source", where, "microphone"),
        numbers=_numbers(entry, OUTBOUND_NUMBERS, where),
        flags=flags,
        ready_state=_text(entry, "trackReadyState", where, None),
    )


def _inbound(entry: dict[str, Any], where: str) -> ClientInbound:
    peer_id = _text(entry, "peer_id", where, None)
    if peer_id is None:
        raise ClientStatsError(f"{where}.peer_id is required")
    return ClientInbound(
        peer_id=peer_id,
        source=_text(entry, "source", where, "microphone"),
        numbers=_numbers(entry, INBOUND_NUMBERS, where),
    )


def _rtt(report: dict[str, Any]) -> dict[str, float]:
    pairs = report.get("candidatePair", {})
    if not isinstance(pairs, dict):
        raise ClientStatsError("candidatePair must be an object")
    rtt: dict[str, float] = {}
    for pc in ("publish", "subscribe"):
        pair = pairs.get(pc)
        if pair is None:
            continue
        if not isinstance(pair, dict):
            raise ClientStatsError(f"candidatePair.{pc} must be an object")
        value = _number(pair, "currentRoundTripTime", f"candidatePair.{pc}")
        if value is not None:
            rtt[pc] = value
    return rtt


def parse(report: Any, received_at: float, max_bytes: int) -> ClientReport:
    """Validate one report (raises ClientStatsError) and keep its known fields."""
    if not isinstance(report, dict):
        raise ClientStatsError("report must be an object")
    size = len(json.dumps(report, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ClientStatsError(
            f"stats report of {size} bytes; the limit is {max_bytes}", "too_large"
        )
    return ClientReport(
        received_at=received_at,
        timestamp=_number(report, "timestamp", "report"),
        outbound=tuple(
            _outbound(e, f"outbound[{n}]")
            for n, e in enumerate(_entries(report, "outbound"))
        ),
        inbound=tuple(
            _inbound(e, f"inbound[{n}]")
            for n, e in enumerate(_entries(report, "inbound"))
        ),
        rtt=_rtt(report),
    )


def check_rate(previous: ClientReport | None, now: float) -> None:
    """At most one report per second per peer (``rate_limited`` otherwise)."""
    if previous is not None and now - previous.received_at < MIN_SPACING:
        raise ClientStatsError(
            "stats reports come at most once per second", "rate_limited"
        )
