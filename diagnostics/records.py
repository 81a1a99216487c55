"""What diagnostics remembers about one peer, as plain records.

A peer's record outlives the peer (``timeline_retention``), so everything the
report needs is copied here: nothing refers back to media-core objects.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .client_stats import ClientReport

#: client ``stats`` reports kept per peer: the findings read the last window
#: (10 s) of them, and each may take ~100 KB parsed (16 KB of JSON)
CLIENT_REPORTS = 32


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    t: float
    event: str
    detail: dict[str, Any]


@dataclass(slots=True)
class Flow:
    """One direction over one interval: counter deltas and current gauges.

    ``expected`` is what should have arrived (uplink: received + lost; downlink:
    what the server sent in the spans receiver reports covered), ``lost`` what
    did not.
    """

    seconds: float = 0.0
    #: packets that went through (received on the uplink, sent on the downlink)
    packets: int = 0
    expected: int = 0
    lost: int = 0
    bytes: int = 0
    jitter_ms: float | None = None
    rtt_ms: float | None = None

    @property
    def loss_pct(self) -> float | None:
        return 100.0 * self.lost / self.expected if self.expected > 0 else None

    @property
    def bitrate_kbps(self) -> float | None:
        return self.bytes * 8 / self.seconds / 1000 if self.seconds > 0 else None

    @property
    def packets_per_s(self) -> float | None:
        return self.packets / self.seconds if self.seconds > 0 else None

    def rates(self) -> dict[str, float | None]:
        return {
            "packets_per_s": rounded(self.packets_per_s),
            "bitrate_kbps": rounded(self.bitrate_kbps),
            "loss_pct": rounded(self.loss_pct, 2),
            "jitter_ms": rounded(self.jitter_ms),
            "rtt_ms": rounded(self.rtt_ms),
        }


@dataclass(slots=True)
class SubFlow:
    """What the server sent this peer of one remote microphone in one interval.

    When a receiver report arrived, ``expected`` is what the server sent since
    the previous one and ``lost`` what the report says went missing; ``lost_here``
    subtracts what the publisher's uplink had already lost (forwarded sequence
    numbers keep those gaps), so it is the loss of this peer's own downlink.
    """

    publisher: str
    sent: int
    expected: int = 0
    lost: int = 0
    lost_here: int = 0
    reported: bool = False
    confirmed: bool = False
    jitter_ms: float | None = None


@dataclass(slots=True)
class Sample:
    """One collector tick of one peer."""

    t: float
    state: str
    uplink: Flow | None
    downlink: Flow
    subs: list[SubFlow]
    #: packets of this peer's microphone the server sent to the others
    delivered: int = 0


@dataclass(frozen=True, slots=True)
class LevelPoint:
    """One second of the microphone's RFC 6464 levels (dBov, 0 = loudest)."""

    t: float
    max_dbov: float
    mean_dbov: float
    packets: int


@dataclass
class PeerRecord:
    peer_id: str
    user_id: str
    name: str
    channel: str
    joined_at: float
    history: int
    state: str = "joining"
    state_since: float = 0.0
    left_at: float | None = None
    leave_reason: str | None = None
    #: None: no microphone published; else its mute state and since when
    mic_muted: bool | None = None
    mic_muted_since: float = 0.0
    mic_published_at: float | None = None
    timeline: deque[TimelineEvent] = field(default_factory=lambda: deque(maxlen=1000))
    samples: deque[Sample] = field(init=False)
    levels: deque[LevelPoint] = field(init=False)
    client: deque[ClientReport] = field(init=False)
    #: the last raw getStats-style sample (live peers only)
    latest: list[dict[str, Any]] = field(default_factory=list)
    latest_t: float | None = None
    audio_logging: bool = False

    def __post_init__(self) -> None:
        self.state_since = self.joined_at
        self.samples = deque(maxlen=self.history)
        self.levels = deque(maxlen=self.history)
        self.client = deque(maxlen=CLIENT_REPORTS)

    @property
    def live(self) -> bool:
        return self.left_at is None

    def add(self, t: float, event: str, **detail: Any) -> None:
        self.timeline.append(TimelineEvent(t, event, detail))

    def summary(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "user_id": self.user_id,
            "name": self.name,
            "channel": self.channel,
            "state": self.state,
            "live": self.live,
            "joined_at": self.joined_at,
            "left_at": self.left_at,
            "leave_reason": self.leave_reason,
            "audio_logging": self.audio_logging,
        }


def total(flows: Iterable[Flow]) -> Flow:
    """Counters summed, gauges averaged over the intervals that had them."""
    out = Flow()
    jitters: list[float] = []
    rtts: list[float] = []
    for flow in flows:
        out.seconds += flow.seconds
        out.packets += flow.packets
        out.expected += flow.expected
        out.lost += flow.lost
        out.bytes += flow.bytes
        if flow.jitter_ms is not None:
            jitters.append(flow.jitter_ms)
        if flow.rtt_ms is not None:
            rtts.append(flow.rtt_ms)
    out.lost = max(0, out.lost)  # duplicates can make a lost counter go back
    out.jitter_ms = sum(jitters) / len(jitters) if jitters else None
    out.rtt_ms = sum(rtts) / len(rtts) if rtts else None
    return out


def rounded(value: float | None, digits: int = 1) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
