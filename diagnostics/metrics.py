"""``/metrics``: Prometheus text read from live state at scrape time.

One registry per ``Diagnostics`` (tests run many servers in one process) and
one custom collector: nothing is counted on the forwarding path; the values are
read from the connection manager, the media core and the stats collector when
Prometheus asks, all kept as they change (a scrape costs the same whatever the
number of peers: no per-peer work, no evaluation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from sfu.server import SfuServer

from .collector import StatsCollector
from .histogram import Histogram
from .store import PeerStore


class Connections(Protocol):
    """What the metrics read of the server's WebSockets."""

    #: live sockets by kind (voice, events, unjoined), kept as they change
    kinds: Counter[str]
    #: ``error`` messages sent, by code
    errors: Counter[str]
    #: seconds from a ``join`` to its ``joined``
    join_seconds: Histogram


class FindingsCounts:
    """Live peers' findings by (code, severity), kept up to date per peer."""

    def __init__(self) -> None:
        self._by_peer: dict[str, Counter[tuple[str, str]]] = {}
        self.total: Counter[tuple[str, str]] = Counter()

    def put(self, peer_id: str, counts: Counter[tuple[str, str]]) -> None:
        self.forget(peer_id)
        self._by_peer[peer_id] = counts
        self.total.update(counts)

    def forget(self, peer_id: str) -> None:
        old = self._by_peer.pop(peer_id, None)
        if old is not None:
            self.total.subtract(old)
            for key in [k for k, v in self.total.items() if v <= 0]:
                del self.total[key]


#: channels named in ``miscord_channel_participants``: the largest; the rest
#: are summed under ``channel="_other"`` (bounded label cardinality)
TOP_CHANNELS = 20


class ServerMetrics(Collector):
    def __init__(
        self,
        connections: Connections,
        sfu: SfuServer,
        collector: StatsCollector,
        store: PeerStore,
        keyframe_requests: Counter[bool],
        findings: FindingsCounts,
    ) -> None:
        self.connections = connections
        self.sfu = sfu
        self.collector = collector
        self.store = store
        self.keyframe_requests = keyframe_requests
        self.findings = findings

    def _channel_sizes(self) -> GaugeMetricFamily:
        sizes = GaugeMetricFamily(
            "miscord_channel_participants",
            f"Voice participants of the {TOP_CHANNELS} largest channels "
            "(the rest summed as _other)",
            labels=["channel"],
        )
        ranked = sorted(
            ((len(c.participants), name) for name, c in self.sfu.channels.items()),
            reverse=True,
        )
        for size, name in ranked[:TOP_CHANNELS]:
            sizes.add_metric([name], size)
        if len(ranked) > TOP_CHANNELS:
            sizes.add_metric(["_other"], sum(s for s, _ in ranked[TOP_CHANNELS:]))
        return sizes

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "miscord_connections", "Live WebSocket connections", labels=["kind"]
        )
        kinds = self.connections.kinds
        for kind in ("voice", "events", "unjoined"):
            connections.add_metric([kind], kinds.get(kind, 0))
        yield connections
        yield self.connections.join_seconds.family(
            "miscord_join_seconds", "Seconds from a join to its joined"
        )
        yield self.collector.fanout_seconds.family(
            "miscord_fanout_seconds",
            "Seconds a received packet took to reach every downlink (fast path)",
        )
        yield GaugeMetricFamily(
            "miscord_participants",
            "Voice participants",
            value=len(self.sfu.participants),
        )
        yield GaugeMetricFamily(
            "miscord_channels", "Voice channels", value=len(self.sfu.channels)
        )
        yield self._channel_sizes()
        if self.sfu.ports is not None:
            ports = GaugeMetricFamily(
                "miscord_rtc_ports",
                "UDP ports of the media range: its size, those promised to "
                "participants, those bound",
                labels=["state"],
            )
            for state in ("size", "reserved", "bound"):
                ports.add_metric([state], getattr(self.sfu.ports, state))
            yield ports
        peers = GaugeMetricFamily(
            "miscord_diagnosed_peers", "Peers with a report", labels=["state"]
        )
        peers.add_metric(["live"], len(self.store.live))
        peers.add_metric(["departed"], len(self.store.departed))
        yield peers
        yield CounterMetricFamily(
            "miscord_forwarded_packets",
            "RTP packets sent to subscribers (counted every stats interval)",
            value=self.collector.forwarded_packets,
        )
        yield CounterMetricFamily(
            "miscord_forwarded_bytes",
            "RTP payload bytes sent to subscribers (counted every stats interval)",
            value=self.collector.forwarded_bytes,
        )
        keyframes = CounterMetricFamily(
            "miscord_keyframe_requests",
            "Keyframe requests by viewers; sent=false were coalesced or deferred",
            labels=["sent"],
        )
        for sent in (True, False):
            keyframes.add_metric([str(sent).lower()], self.keyframe_requests[sent])
        yield keyframes
        errors = CounterMetricFamily(
            "miscord_errors", "error messages sent to clients", labels=["code"]
        )
        for code, count in sorted(self.connections.errors.items()):
            errors.add_metric([code], count)
        yield errors
        findings = GaugeMetricFamily(
            "miscord_findings",
            "Live peers whose report has this finding now",
            labels=["code", "severity"],
        )
        for (code, severity), count in sorted(self.findings.total.items()):
            findings.add_metric([code, severity], count)
        yield findings
        yield SummaryMetricFamily(
            "miscord_stats_collector_seconds",
            "Duration of one stats collection over every live peer",
            count_value=self.collector.ticks,
            sum_value=self.collector.seconds_total,
        )
        yield GaugeMetricFamily(
            "miscord_stats_collector_last_seconds",
            "Duration of the last stats collection",
            value=self.collector.last_seconds,
        )


def registry_for(metrics: ServerMetrics) -> CollectorRegistry:
    """The server's metrics and the process's (CPU, memory, open files, from
    /proc: prometheus-client's process collector)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
