"""Everything the findings of one report are judged on, gathered once.

A report looks at a window of recent samples (``Thresholds.window``) ending
now, or when the peer left. Departed peers are judged as they were then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .client_stats import ClientReport
from .quality import DirectionQuality
from .records import Flow, LevelPoint, PeerRecord, Sample, SubFlow, total
from .thresholds import Thresholds

T = TypeVar("T")


@dataclass
class Context:
    record: PeerRecord
    now: float
    thresholds: Thresholds
    #: the other peers of the channel (live or departed) during the window
    others: list[PeerRecord]
    #: the channel has nobody else right now (live peers only), since when
    alone_since: float | None = None
    window: list[Sample] = field(init=False)
    uplink: Flow | None = field(init=False)
    downlink: Flow = field(init=False)
    client: list[ClientReport] = field(init=False)
    #: each direction's network score, MOS and the band its findings take
    quality: dict[str, DirectionQuality] = field(init=False)

    def __post_init__(self) -> None:
        self.client = recent(
            self.record.client,
            self.now - self.thresholds.window,
            self.now,
            lambda r: r.received_at,
        )
        self.window = self._figures_window()
        uplinks = [s.uplink for s in self.window if s.uplink is not None]
        self.uplink = total(uplinks) if uplinks else None
        self.downlink = total(s.downlink for s in self.window)
        for side, flow in (("uplink", self.uplink), ("downlink", self.downlink)):
            if flow is not None and flow.rtt_ms is None:
                flow.rtt_ms = self._client_rtt_ms(side)
        self.downlink.delay_spread_ms = self._client_spread_ms()
        self._client_late()
        self.quality = {
            "uplink": DirectionQuality.of(self.uplink),
            "downlink": DirectionQuality.of(self.downlink),
        }

    def _figures_window(self) -> list[Sample]:
        """The window the figures are judged on: the last seconds, or for a
        peer that is gone, those up to its last connected sample (none: it
        never connected), not the silence of its end."""
        if self.record.live:
            return self.samples_of(self.record, self.thresholds.window)
        connected = [s.t for s in self.record.samples if s.state == "connected"]
        if not connected:
            return []
        end = connected[-1]
        return recent(
            self.record.samples, end - self.thresholds.window, end, lambda s: s.t
        )

    def _client_spread_ms(self) -> float | None:
        """The spread of delay the listener's client measured on its worst
        incoming stream (its last report; the Python client sends it)."""
        spreads = [
            entry.numbers["relativeDelayP95"]
            for r in self.client[-1:]
            for entry in r.inbound
            if "relativeDelayP95" in entry.numbers
        ]
        return 1000 * max(spreads) if spreads else None

    def _client_late(self) -> None:
        """What the listener's client counted within the window: packets
        behind a newer one, and late ones (behind three or more: a low-delay
        jitter buffer conceals them, so they count against the downlink like
        loss). The Python client reports them; browsers do not."""
        reports = [
            r for r in self.client if any("packetsLate" in e.numbers for e in r.inbound)
        ]
        if len(reports) < 2:
            return
        first, last = reports[0], reports[-1]
        for name, counter in (
            ("packetsLate", "late"),
            ("packetsReordered", "reordered"),
        ):
            count = 0.0
            for entry in last.inbound:
                before = first.inbound_from(entry.peer_id)
                if before is not None and name in entry.numbers:
                    count += entry.numbers[name] - before.numbers.get(name, 0.0)
            setattr(self.downlink, counter, max(0, round(count)))
        self.downlink.arrivals = True

    def _client_rtt_ms(self, side: str) -> float | None:
        """The client's own measure of one connection's RTT (browsers report
        their selected candidate pair's)."""
        pc = "publish" if side == "uplink" else "subscribe"
        rtts = [r.rtt[pc] for r in self.client[-1:] if pc in r.rtt]
        return 1000 * rtts[0] if rtts else None

    def samples_of(self, record: PeerRecord, seconds: float) -> list[Sample]:
        return recent(record.samples, self.now - seconds, self.now, lambda s: s.t)

    def levels_of(self, record: PeerRecord, seconds: float) -> list[LevelPoint]:
        return recent(record.levels, self.now - seconds, self.now, lambda p: p.t)

    def subs_from(
        self, subscriber: PeerRecord, publisher: str, seconds: float
    ) -> list[SubFlow]:
        """What ``subscriber`` was sent of ``publisher``'s microphone."""
        return [
            sub
            for sample in self.samples_of(subscriber, seconds)
            for sub in sample.subs
            if sub.publisher == publisher
        ]

    def present_for(self, seconds: float) -> bool:
        return self.now - self.record.joined_at >= seconds

    def other(self, peer_id: str) -> PeerRecord | None:
        return next((o for o in self.others if o.peer_id == peer_id), None)


def recent(
    items: Sequence[T], start: float, end: float, time_of: Callable[[T], float]
) -> list[T]:
    """The items of a time-ordered history within (start, end], read from the
    newest end (a window is short, a history long)."""
    out: list[T] = []
    for item in reversed(items):
        t = time_of(item)
        if t <= start:
            break
        if t <= end:
            out.append(item)
    out.reverse()
    return out


def interval_of(samples: Sequence[Sample]) -> float:
    """The mean seconds between samples (0 with fewer than two)."""
    if len(samples) < 2:
        return 0.0
    return (samples[-1].t - samples[0].t) / (len(samples) - 1)


def rolling(
    samples: list[Sample], span: float, pick: Callable[[Sample], Flow | None]
) -> list[tuple[float, Flow | None]]:
    """Each sample's time with the flows of the last ``span`` seconds summed."""
    out: list[tuple[float, Flow | None]] = []
    start = 0
    for i, sample in enumerate(samples):
        while samples[start].t <= sample.t - span:
            start += 1
        flows = [f for s in samples[start : i + 1] if (f := pick(s)) is not None]
        out.append((sample.t, total(flows) if flows else None))
    return out


def run_since(points: Iterable[tuple[float, bool]], gap: float) -> float | None:
    """Start of the latest run of True points, tolerating False stretches
    shorter than ``gap`` seconds (noisy measures cross a threshold unevenly)."""
    since: float | None = None
    calm_from: float | None = None
    for t, crossed in sorted(points, reverse=True):
        if crossed:
            since, calm_from = t, None
        elif since is not None:
            calm_from = calm_from or t
            if calm_from - t >= gap:
                break
    return since
