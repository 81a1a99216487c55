"""A 0-100 quality score and a MOS estimate per direction, from loss, jitter, RTT.

The simplified E-model LiveKit's connection-quality scorer uses
(pkg/sfu/connectionquality/scorer.go): an effective delay of RTT/2 + 2 x jitter
costs 1 point per 40 ms up to 160 ms and 1 per 10 ms beyond; each percent of
loss costs ``LOSS_WEIGHT`` points; the score maps to MOS like an R-factor.
Healthy: above 80.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import Flow, rounded

#: points per percent of loss (Opus without in-band FEC: loss is audible early)
LOSS_WEIGHT = 5.0


def score(loss_pct: float, jitter_ms: float, rtt_ms: float) -> float:
    delay = rtt_ms / 2 + 2 * jitter_ms
    delay_effect = delay / 40 if delay <= 160 else (delay - 120) / 10
    return max(0.0, min(100.0, 100.0 - delay_effect - LOSS_WEIGHT * loss_pct))


def mos(value: float) -> float:
    """ITU-T G.107's R-factor to MOS mapping (1.0 .. 4.5)."""
    if value <= 0:
        return 1.0
    if value >= 100:
        return 4.5
    return 1 + 0.035 * value + 0.000007 * value * (value - 60) * (100 - value)


@dataclass(frozen=True)
class DirectionQuality:
    score: float | None
    mos: float | None
    loss_pct: float | None
    jitter_ms: float | None
    rtt_ms: float | None

    @classmethod
    def of(cls, flow: Flow | None, rtt_ms: float | None) -> DirectionQuality:
        """No score without packets: nothing was measured, nothing is claimed."""
        if flow is None or flow.expected <= 0:
            return cls(None, None, None, None, rounded(rtt_ms))
        loss = flow.loss_pct or 0.0
        value = score(loss, flow.jitter_ms or 0.0, rtt_ms or 0.0)
        return cls(
            round(value),
            round(mos(value), 2),
            rounded(loss, 2),
            rounded(flow.jitter_ms),
            rounded(rtt_ms),
        )

    def as_dict(self) -> dict[str, float | None]:
        return {
            "score": self.score,
            "mos": self.mos,
            "loss_pct": self.loss_pct,
            "jitter_ms": self.jitter_ms,
            "rtt_ms": self.rtt_ms,
        }
