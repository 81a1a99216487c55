"""The stats collector: one task samples every live peer each ``stats_interval``.

A tick calls each participant's ``stats()`` once, turns the cumulative counters
into per-interval flows (what the report and the charts need) and copies the
microphone's per-second levels, so a record survives its peer. Nothing here
runs per packet. Downlink loss is corrected for the publisher's uplink loss:
forwarded sequence numbers keep the publisher's gaps, so a subscriber's receiver
report counts those too; the publisher's lost counter is interpolated at the
times of the receiver reports to subtract them.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import logs
from .histogram import Histogram
from .records import Flow, LevelPoint, PeerRecord, Sample, SubFlow
from .store import PeerStore

if TYPE_CHECKING:
    from sfu.participant import Participant
    from sfu.server import SfuServer

log = logs.get("stats")

#: counter points kept for interpolation: receiver reports come every 1 s
#: (aiortc) to 5 s (browsers, for audio); this covers several of them
SERIES_POINTS = 32


@dataclass(slots=True)
class _Series:
    """Recent (t, cumulative value) points of one counter, to read it between
    ticks (at the time a receiver report was sent)."""

    points: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=SERIES_POINTS)
    )

    def at(self, t: float) -> float:
        points = self.points
        i = bisect_left(points, t, key=lambda p: p[0])
        if i == 0:
            return points[0][1]
        if i == len(points):
            return points[-1][1]
        (t0, v0), (t1, v1) = points[i - 1], points[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


@dataclass(slots=True)
class _Uplink:
    """Cumulative counters of one microphone publication at the last tick."""

    key: Any
    received: int
    lost: int
    bytes: int
    jitter_ms: float | None
    lost_series: _Series = field(default_factory=_Series)
    #: the arrival counters (``ARRIVAL``) at the last tick
    arrival: dict[str, int] = field(default_factory=dict)


#: the publication's arrival counters (getStats names) and the Flow fields
#: their deltas go to
ARRIVAL = {
    "packetsReordered": "reordered",
    "packetsLate": "late",
    "burstLossCount": "bursts",
    "burstPacketsLost": "burst_lost",
}


def _pair_rtt_ms(stats: list[dict[str, Any]], pc: str) -> float | None:
    """The RTT of one connection's own path (its consent checks)."""
    rtt = next(
        (
            s.get("currentRoundTripTime")
            for s in stats
            if s["type"] == "candidate-pair" and s.get("pc") == pc
        ),
        None,
    )
    return rtt * 1000 if rtt is not None else None


@dataclass(slots=True)
class _Downlink:
    """Cumulative counters of one subscriber m-line (by SSRC) at the last tick."""

    publisher: str | None
    sent: int
    bytes: int
    sent_series: _Series = field(default_factory=_Series)
    report_t: float | None = None
    report_lost: int = 0
    report_missing: int | None = None  # packetsMissingUpstream (fast path)
    report_highest: int = 0


@dataclass
class _PeerCounters:
    t: float
    uplink: _Uplink | None = None
    downlinks: dict[Any, _Downlink] = field(default_factory=dict)


#: seconds: the fast path's fan-out takes microseconds per packet
FANOUT_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2)


class StatsCollector:
    def __init__(self, store: PeerStore, sfu: SfuServer, interval: float) -> None:
        self.store = store
        self.sfu = sfu
        self.interval = interval
        self._counters: dict[str, _PeerCounters] = {}
        #: every packet and payload byte sent to subscribers (for /metrics)
        self.forwarded_packets = 0
        self.forwarded_bytes = 0
        self.ticks = 0
        self.seconds_total = 0.0
        self.last_seconds = 0.0
        #: the fast path's fan-out durations (/metrics), microseconds up
        self.fanout_seconds = Histogram(FANOUT_BUCKETS)
        self._fanout_marks: dict[int, int] = {}  # publication id -> times read

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.tick()
            except Exception:
                log.exception("stats collection failed")

    def tick(self) -> float:
        """Sample every live participant once; returns the seconds it took."""
        started = time.perf_counter()
        now = time.time()
        pairs: list[tuple[Participant, PeerRecord, list[dict[str, Any]]]] = []
        marks: dict[int, int] = {}
        for participant in list(self.sfu.participants.values()):
            record = self.store.live.get(participant.peer_id)
            if record is not None:
                pairs.append((participant, record, participant.stats()))
            for pub in participant.publish.publications.values():
                times, marks[id(pub)] = pub.fanout_times_since(
                    self._fanout_marks.get(id(pub), 0)
                )
                for seconds in times:
                    self.fanout_seconds.observe(seconds)
        self._fanout_marks = marks
        # uplinks first: downlinks of this tick subtract the publishers' loss
        uplinks = {
            record.peer_id: self._uplink(record, stats, now)
            for _, record, stats in pairs
        }
        delivered: dict[str, int] = {}
        samples = []
        for participant, record, stats in pairs:
            downlink, subs = self._downlink(record, stats, now)
            for sub in subs:
                delivered[sub.publisher] = delivered.get(sub.publisher, 0) + sub.sent
            samples.append(
                (
                    record,
                    Sample(now, record.state, uplinks[record.peer_id], downlink, subs),
                )
            )
            record.latest, record.latest_t = stats, now
            self._copy_levels(participant, record)
        for record, sample in samples:
            sample.delivered = delivered.get(record.peer_id, 0)
            record.samples.append(sample)
            self._counters[record.peer_id].t = now
        for gone in set(self._counters) - {r.peer_id for _, r, _ in pairs}:
            del self._counters[gone]
        self.store.prune(now)
        elapsed = time.perf_counter() - started
        self.ticks += 1
        self.seconds_total += elapsed
        self.last_seconds = elapsed
        log.debug("sampled %d peers in %.2f ms", len(pairs), elapsed * 1000)
        return elapsed

    # --- uplink -------------------------------------------------------------------

    def _uplink(
        self, record: PeerRecord, stats: list[dict[str, Any]], now: float
    ) -> Flow | None:
        counters = self._counters.setdefault(record.peer_id, _PeerCounters(now))
        item = next(
            (
                s
                for s in stats
                if s["type"] == "inbound-rtp" and s.get("source") == "microphone"
            ),
            None,
        )
        if item is None:
            counters.uplink = None
            return None
        key = (item.get("mid"), item.get("ssrc"))
        received = int(item.get("packetsReceived", 0))
        lost = int(item.get("packetsLost", 0))
        size = int(item.get("bytesReceived", 0))
        jitter = item.get("jitter")
        jitter_ms = jitter * 1000 if jitter is not None else None
        arrival = {name: int(item.get(name, 0)) for name in ARRIVAL}
        spread = item.get("relativeDelayP95")
        previous = counters.uplink
        if previous is None or previous.key != key:
            counters.uplink = _Uplink(
                key, received, lost, size, jitter_ms, arrival=arrival
            )
            counters.uplink.lost_series.points.append((now, lost))
            return None
        flow = Flow(
            seconds=now - counters.t,
            packets=received - previous.received,
            expected=(received - previous.received) + (lost - previous.lost),
            lost=lost - previous.lost,
            bytes=size - previous.bytes,
            jitter_ms=jitter_ms,
            rtt_ms=_pair_rtt_ms(stats, "publish"),
            delay_spread_ms=spread * 1000 if spread is not None else None,
            arrivals=True,
            **{
                field_: arrival[name] - previous.arrival.get(name, 0)
                for name, field_ in ARRIVAL.items()
            },
        )
        previous.arrival = arrival
        previous.received, previous.lost, previous.bytes = received, lost, size
        previous.jitter_ms = jitter_ms
        previous.lost_series.points.append((now, lost))
        return flow

    # --- downlink -----------------------------------------------------------------

    def _downlink(
        self, record: PeerRecord, stats: list[dict[str, Any]], now: float
    ) -> tuple[Flow, list[SubFlow]]:
        counters = self._counters[record.peer_id]
        remote = {s.get("ssrc"): s for s in stats if s["type"] == "remote-inbound-rtp"}
        flow = Flow(seconds=now - counters.t)
        subs: list[SubFlow] = []
        jitters: list[float] = []
        rtts: list[float] = []
        seen = set()
        for item in stats:
            if item["type"] != "outbound-rtp":
                continue
            ssrc = item.get("ssrc", item.get("id"))
            seen.add(ssrc)
            publisher = item.get("publisher")
            sent = int(item.get("packetsSent", 0))
            size = int(item.get("bytesSent", 0))
            previous = counters.downlinks.get(ssrc)
            if previous is None or previous.publisher != publisher:
                # a new m-line, or another publisher on it: a new baseline
                previous = counters.downlinks[ssrc] = _Downlink(publisher, sent, size)
                previous.sent_series.points.append((now, sent))
                continue
            self.forwarded_packets += max(0, sent - previous.sent)
            self.forwarded_bytes += max(0, size - previous.bytes)
            previous.sent_series.points.append((now, sent))
            if publisher is not None and item.get("source") == "microphone":
                report = remote.get(ssrc)
                sub = self._sub(publisher, sent - previous.sent, report, previous)
                subs.append(sub)
                flow.packets += sub.sent
                flow.expected += sub.expected
                flow.lost += sub.lost_here
                flow.bytes += size - previous.bytes
                if sub.jitter_ms is not None:
                    jitters.append(sub.jitter_ms)
                if report is not None and report.get("roundTripTime") is not None:
                    rtts.append(report["roundTripTime"] * 1000)
            previous.sent, previous.bytes = sent, size
        for ssrc in set(counters.downlinks) - seen:
            del counters.downlinks[ssrc]
        flow.jitter_ms = max(jitters) if jitters else None
        flow.rtt_ms = (
            sum(rtts) / len(rtts) if rtts else _pair_rtt_ms(stats, "subscribe")
        )
        return flow, subs

    def _sub(
        self,
        publisher: str,
        sent: int,
        report: dict[str, Any] | None,
        previous: _Downlink,
    ) -> SubFlow:
        """One interval of one remote microphone; loss is counted between two
        receiver reports, against the sequence numbers they cover (fast path)
        or what was sent between their times."""
        sub = SubFlow(publisher=publisher, sent=sent, confirmed=report is not None)
        if report is None:
            return sub
        uplink = self._publisher_uplink(publisher)
        report_t = report.get("timestamp")
        lost = int(report.get("packetsLost", 0))
        missing = report.get("packetsMissingUpstream")
        highest = int(report.get("highestSequenceNumber", 0))
        if report_t is not None and report_t != previous.report_t:
            if previous.report_t is not None:
                sub.reported = True
                sub.lost = lost - previous.report_lost
                if missing is not None and previous.report_missing is not None:
                    # fast path, exact: the report's own sequence numbers, less
                    # the gaps we forwarded among them (lost before us)
                    upstream = missing - previous.report_missing
                    sub.expected = highest - previous.report_highest - upstream
                else:  # by time, interpolated between ticks
                    sub.expected = round(
                        previous.sent_series.at(report_t)
                        - previous.sent_series.at(previous.report_t)
                    )
                    upstream = 0.0
                    if uplink is not None:
                        series = uplink.lost_series
                        upstream = series.at(report_t) - series.at(previous.report_t)
                # signed: a late packet (or an interpolation error) makes an
                # interval negative and cancels out over a window
                sub.lost_here = round(sub.lost - upstream)
            previous.report_t, previous.report_lost = report_t, lost
            previous.report_missing = missing
            previous.report_highest = highest
        jitter = report.get("jitter")
        if jitter is not None:
            # independent jitter adds in variance: keep what this hop added
            upstream_ms = (uplink.jitter_ms or 0.0) if uplink is not None else 0.0
            sub.jitter_ms = math.sqrt(max(0.0, (jitter * 1000) ** 2 - upstream_ms**2))
        return sub

    def _publisher_uplink(self, publisher: str) -> _Uplink | None:
        counters = self._counters.get(publisher)
        return counters.uplink if counters is not None else None

    # --- levels -------------------------------------------------------------------

    @staticmethod
    def _copy_levels(participant: Participant, record: PeerRecord) -> None:
        pub = participant.publish.by_source("microphone")
        if pub is None or pub.levels is None:
            return
        last = record.levels[-1].t if record.levels else 0.0
        new = []
        for second in reversed(pub.levels.history):
            if second.t <= last:
                break
            new.append(second)
        for second in reversed(new):
            record.levels.append(
                LevelPoint(second.t, second.max_dbov, second.mean_dbov, second.packets)
            )
