"""The audio-diagnosis report of one peer, in the shape of docs/protocol.md."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .context import Context, interval_of, rolling
from .findings import BOTH, CRITICAL, NETWORK, WARNING, Finding, evaluate
from .records import Flow, PeerRecord, Sample, rounded
from .store import PeerStore
from .thresholds import Thresholds

if TYPE_CHECKING:
    from sfu.server import SfuServer

#: seconds each chart point sums (a single tick's loss is too lumpy to read)
CHART_SPAN = 2.0


def _overlaps(record: PeerRecord, start: float, end: float) -> bool:
    return record.joined_at <= end and (
        record.left_at is None or record.left_at >= start
    )


def context_of(
    record: PeerRecord, store: PeerStore, sfu: SfuServer, thresholds: Thresholds
) -> Context:
    now = time.time() if record.live else (record.left_at or time.time())
    start = now - max(thresholds.window, thresholds.one_way_grace)
    others = [
        r
        for r in store.all()
        if r.channel == record.channel
        and r.peer_id != record.peer_id
        and _overlaps(r, start, now)
    ]
    alone_since = None
    channel = sfu.channels.get(record.channel) if record.live else None
    if channel is not None and len(channel.participants) <= 1:
        departures = [
            r.left_at
            for r in store.departed.values()
            if r.channel == record.channel and r.left_at
        ]
        alone_since = max([record.joined_at, *departures])
    return Context(record, now, thresholds, others, alone_since)


def verdict(findings: list[Finding]) -> str:
    severities = {f.severity for f in findings}
    if CRITICAL in severities:
        return "broken"
    return "degraded" if WARNING in severities else "ok"


def audio_score(side: str, findings: list[Finding]) -> int:
    """What the listener hears of the content, beside the network score: 0
    when a critical finding other than the network's stands on this side (a
    silent or unpublished microphone, one-way audio, no connection), 50 for a
    warning, else 100. A muted microphone is ``info``: it costs nothing."""
    severities = {
        f.severity for f in findings if f.code not in NETWORK and f.side in (side, BOTH)
    }
    if CRITICAL in severities:
        return 0
    return 50 if WARNING in severities else 100


def _quality(ctx: Context, side: str, findings: list[Finding]) -> dict[str, Any]:
    return {
        **ctx.quality[side].as_dict(),
        "audio_score": audio_score(side, findings),
    }


def build(ctx: Context) -> dict[str, Any]:
    record = ctx.record
    findings = evaluate(ctx)
    return {
        "peer_id": record.peer_id,
        "user_id": record.user_id,
        "name": record.name,
        "channel": record.channel,
        "state": record.state,
        "live": record.live,
        "generated_at": round(time.time(), 3),
        "verdict": verdict(findings),
        "uplink": _quality(ctx, "uplink", findings),
        "downlink": _quality(ctx, "downlink", findings),
        "findings": [f.as_dict() for f in findings],
        "timeline": [
            {"t": round(e.t, 3), "event": e.event, "detail": e.detail}
            for e in record.timeline
        ],
        "series": series(record),
    }


def _pct(flow: Flow | None) -> float | None:
    return rounded(flow.loss_pct, 2) if flow is not None else None


def series(record: PeerRecord) -> dict[str, list[Any]]:
    """The charts' data: one point per collector tick."""
    samples: list[Sample] = list(record.samples)
    span = max(CHART_SPAN, 2 * interval_of(samples))
    up = rolling(samples, span, lambda s: s.uplink)
    down = rolling(samples, span, lambda s: s.downlink)
    levels = list(record.levels)
    level_at: list[float | None] = []
    i = 0
    for sample in samples:
        while i + 1 < len(levels) and levels[i + 1].t <= sample.t:
            i += 1
        near = levels and 0 <= sample.t - levels[i].t < 2.0
        level_at.append(levels[i].max_dbov if near else None)
    jitter = []
    for sample in samples:
        values = [
            f.jitter_ms
            for f in (sample.uplink, sample.downlink)
            if f is not None and f.jitter_ms is not None
        ]
        jitter.append(rounded(max(values)) if values else None)
    return {
        "t": [round(s.t, 3) for s in samples],
        "uplink_loss_pct": [_pct(f) for _, f in up],
        "downlink_loss_pct": [_pct(f) for _, f in down],
        "jitter_ms": jitter,
        "rtt_ms": [rounded(s.downlink.rtt_ms) for s in samples],
        "uplink_rtt_ms": [
            rounded(s.uplink.rtt_ms) if s.uplink else None for s in samples
        ],
        "delay_spread_ms": [rounded(f.delay_spread_ms) if f else None for _, f in up],
        "late_pct": [rounded(f.late_pct, 2) if f else None for _, f in up],
        "level_dbov": level_at,
        "bitrate_kbps": [rounded(f.bitrate_kbps) if f else None for _, f in up],
    }
