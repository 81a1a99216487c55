"""Durations counted into fixed buckets as they happen, read as a Prometheus
histogram at scrape time."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.core import HistogramMetricFamily


class Histogram:
    """Durations counted into fixed buckets as they happen (a scrape reads
    them: an observation is one binary search)."""

    #: seconds: from a loopback round trip to a slow network's
    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        # the first bucket whose bound is at least ``seconds`` (else +Inf)
        self.counts[bisect_left(self.buckets, seconds)] += 1

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, buckets = 0, []
        for bound, count in zip(
            [*map(str, self.buckets), "+Inf"], self.counts, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(
            name, documentation, buckets=buckets, sum_value=self.sum
        )
