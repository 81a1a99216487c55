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
    #: what RFC 3550 jitter misses (uplink, measured by the server): packets
    #: that arrived behind newer ones, late ones (behind three or more), the
    #: loss bursts and the packets they took, and the 95th percentile of the
    #: recent packets' delay beyond the quickest one's
    reordered: int = 0
    late: int = 0
    bursts: int = 0
    burst_lost: int = 0
    delay_spread_ms: float | None = None
    #: reordered, late and bursts were counted (the server counts the uplink)
    arrivals: bool = False

    @property
    def loss_pct(self) -> float | None:
        return 100.0 * self.lost / self.expected if self.expected > 0 else None

    @property
    def late_pct(self) -> float | None:
        if not self.arrivals or self.packets <= 0:
            return None
        return 100.0 * self.late / self.packets

    @property
    def reorder_pct(self) -> float | None:
        if not self.arrivals or self.packets <= 0:
            return None
        return 100.0 * self.reordered / self.packets

    @property
    def burst_ratio(self) -> float:
        """ITU-T G.113's BurstR: the mean loss burst over the one random loss
        at this rate would give (1: random; above: bursty)."""
        loss = (self.loss_pct or 0.0) / 100
        if self.bursts <= 0 or self.lost <= 0 or loss >= 1:
            return 1.0
        mean_burst = max(1.0, min(self.burst_lost, self.lost) / self.bursts)
        return max(1.0, mean_burst * (1 - loss))

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
            "delay_spread_ms": rounded(self.delay_spread_ms),
            "reorder_pct": rounded(self.reorder_pct, 2),
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
    gauges: dict[str, list[float]] = {g: [] for g in GAUGES}
    for flow in flows:
        for counter in COUNTERS:
            setattr(out, counter, getattr(out, counter) + getattr(flow, counter))
        for gauge, values in gauges.items():
            if (value := getattr(flow, gauge)) is not None:
                values.append(value)
        out.arrivals = out.arrivals or flow.arrivals
    out.lost = max(0, out.lost)  # duplicates can make a lost counter go back
    for gauge, values in gauges.items():
        setattr(out, gauge, sum(values) / len(values) if values else None)
    return out


#: a Flow's fields that add up over intervals, and those averaged
COUNTERS = (
    "seconds",
    "packets",
    "expected",
    "lost",
    "bytes",
    "reordered",
    "late",
    "bursts",
    "burst_lost",
)
GAUGES = ("jitter_ms", "rtt_ms", "delay_spread_ms")


def rounded(value: float | None, digits: int = 1) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
