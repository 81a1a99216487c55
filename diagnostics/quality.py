"""One model from numbers to words: a 0-100 network score and a MOS per
direction from ITU-T G.107's E-model (simplified: no echo, no noise terms),
and the severity band every network finding of that direction takes from it.

    R = 93.2 - Id - Ie_eff                                   (G.107 7.1)
    Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)       (G.107 7.4)
    Id = 0.024 Ta + 0.11 (Ta - 177.3) H(Ta - 177.3)          (Cole & Rosenbluth)

``Ppl`` is what the listener misses: packets lost, plus those that arrive too
late for a jitter buffer (behind three or more newer packets). ``BurstR`` is
measured from the loss bursts (1 for random loss). Opus with concealment is
taken as ``Ie`` 0, ``Bpl`` 25.1 (G.113 Appendix I's value for a codec with
packet-loss concealment). ``Ta`` is the one-way delay: half the connection's
own RTT plus the jitter buffer its arrivals need (the larger of twice the RFC
3550 jitter and the 95th percentile of relative delay, which reordering
raises while RFC 3550 jitter ignores it). The score is R within 0..100; MOS
comes from R (G.107 B.4); the bands are the contract's (1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import Flow, rounded

#: R of a perfect call (G.107's default basic signal-to-noise ratio)
R0 = 93.2
#: packet-loss robustness of a codec with concealment (G.113 Appendix I)
BPL = 25.1
INFO, WARNING, CRITICAL = "info", "warning", "critical"


def one_way_ms(flow: Flow) -> float:
    """Half the RTT plus the jitter buffer the arrivals need (unmeasured: 0)."""
    buffer = max(2 * (flow.jitter_ms or 0.0), flow.delay_spread_ms or 0.0)
    return (flow.rtt_ms or 0.0) / 2 + buffer


def r_factor(loss_pct: float, burst_ratio: float, delay_ms: float) -> float:
    ie_eff = 95 * loss_pct / (loss_pct / burst_ratio + BPL) if loss_pct > 0 else 0.0
    delay_effect = 0.024 * delay_ms + 0.11 * max(0.0, delay_ms - 177.3)
    return R0 - delay_effect - ie_eff


def mos(r: float) -> float:
    """ITU-T G.107's R-factor to MOS mapping (1.0 .. 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 0.000007 * r * (r - 60) * (100 - r)


def band(value: float | None) -> str:
    """The severity a direction's network findings take from its MOS: at or
    above 4.0 nothing above info; from 2.6 a warning; below, critical."""
    if value is None or value >= 4.0:
        return INFO
    return WARNING if value >= 2.6 else CRITICAL


@dataclass(frozen=True)
class DirectionQuality:
    score: float | None
    mos: float | None
    loss_pct: float | None
    jitter_ms: float | None
    rtt_ms: float | None
    delay_spread_ms: float | None = None
    reorder_pct: float | None = None
    late_pct: float | None = None
    burst_ratio: float | None = None

    @classmethod
    def of(cls, flow: Flow | None) -> DirectionQuality:
        """No score without packets: nothing was measured, nothing is claimed."""
        if flow is None or flow.expected <= 0:
            return cls(None, None, None, None, rounded(flow.rtt_ms) if flow else None)
        loss = flow.loss_pct or 0.0
        late = flow.late_pct
        r = r_factor(loss + (late or 0.0), flow.burst_ratio, one_way_ms(flow))
        return cls(
            round(max(0.0, min(100.0, r))),
            round(mos(r), 2),
            rounded(loss, 2),
            rounded(flow.jitter_ms),
            rounded(flow.rtt_ms),
            rounded(flow.delay_spread_ms),
            rounded(flow.reorder_pct, 2),
            rounded(late, 2) if late is not None else None,
            rounded(flow.burst_ratio, 2),
        )

    @property
    def band(self) -> str:
        return band(self.mos)

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            # network figures; what the listener hears of the content is
            # ``audio_score`` (report.py)
            "scope": "network",
            "score": self.score,
            "mos": self.mos,
            "loss_pct": self.loss_pct,
            "jitter_ms": self.jitter_ms,
            "rtt_ms": self.rtt_ms,
            "delay_spread_ms": self.delay_spread_ms,
            "reorder_pct": self.reorder_pct,
            "late_pct": self.late_pct,
            "burst_ratio": self.burst_ratio,
        }
