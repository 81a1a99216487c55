"""``diagnostics.quality``: one model from loss, delay and its variation to a
score, a MOS and the band of severity the findings of a direction take."""

from __future__ import annotations

import pytest

from diagnostics.quality import CRITICAL, INFO, WARNING, DirectionQuality, band, mos
from diagnostics.records import Flow


def flow(loss_pct: float = 0.0, **fields: float) -> Flow:
    expected = 1000
    lost = round(expected * loss_pct / 100)
    return Flow(
        seconds=20.0,
        packets=expected - lost,
        expected=expected,
        lost=lost,
        arrivals=True,
        **fields,
    )


def test_a_clean_direction_scores_high_with_nothing_to_say():
    quality = DirectionQuality.of(flow(jitter_ms=2.0, rtt_ms=20.0))
    assert quality.score is not None and quality.score >= 90
    assert quality.mos is not None and quality.mos >= 4.3
    assert quality.band == INFO


def test_mos_falls_monotonically_with_loss_and_burstiness():
    random = [DirectionQuality.of(flow(p)).mos for p in (0, 1, 3, 5, 10, 15, 20, 30)]
    assert random == sorted(random, reverse=True) and len(set(random)) == len(random)
    bursty = DirectionQuality.of(flow(10, bursts=20, burst_lost=100)).mos
    assert bursty is not None and bursty < random[4]  # 10 % in bursts of 5


@pytest.mark.parametrize(
    ("loss", "expected"),
    [(2, INFO), (5, WARNING), (15, WARNING), (25, CRITICAL)],
)
def test_the_band_of_loss(loss, expected):
    assert DirectionQuality.of(flow(loss)).band == expected


def test_bands_follow_the_contract():
    assert [band(m) for m in (4.4, 4.0, 3.99, 3.1, 2.6, 2.59, 1.0)] == [
        INFO,
        INFO,
        WARNING,
        WARNING,
        WARNING,
        CRITICAL,
        CRITICAL,
    ]
    assert band(None) == INFO  # nothing measured: nothing claimed


def test_delay_variation_costs_like_delay_and_late_packets_like_loss():
    steady = DirectionQuality.of(flow(jitter_ms=20.0)).mos
    spread = DirectionQuality.of(flow(jitter_ms=20.0, delay_spread_ms=120.0)).mos
    late = DirectionQuality.of(flow(jitter_ms=20.0, delay_spread_ms=120.0, late=80)).mos
    assert steady is not None and spread is not None and late is not None
    assert steady > spread > late
    assert DirectionQuality.of(flow(late=80)).late_pct == 8.0


def test_a_slow_route_is_fine_until_the_one_way_delay_passes_g114():
    near = DirectionQuality.of(flow(rtt_ms=300.0))
    far = DirectionQuality.of(flow(rtt_ms=900.0))
    assert near.band == INFO and far.band == WARNING


def test_nothing_measured_is_null_not_zero():
    empty = DirectionQuality.of(Flow(rtt_ms=25.0))
    assert (empty.score, empty.mos, empty.loss_pct) == (None, None, None)
    assert empty.rtt_ms == 25.0
    assert DirectionQuality.of(None).as_dict()["score"] is None


def test_mos_mapping_ends():
    assert mos(-5) == 1.0 and mos(120) == 4.5
    assert 4.0 < mos(80.5) < 4.05
