"""The report as an HTML page a support person reads in a minute.

Verdict and scores first, then the findings in plain words with their advice,
then the charts and the lifecycle timeline. Rendered on the server from the
JSON report; everything is inline (the page must work without internet).
"""

from __future__ import annotations

import time
from html import escape
from importlib import resources
from string import Template
from typing import Any

from .charts import Line, chart
from .thresholds import Thresholds

SIDES = {
    "uplink": "uplink (user → server)",
    "downlink": "downlink (server → user)",
    "both": "both directions",
}
#: timeline rows shown (the newest)
TIMELINE_ROWS = 300


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


def _ago(t: float, now: float) -> str:
    seconds = max(0, int(now - t))
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def _direction(name: str, values: dict[str, Any]) -> str:
    score = values.get("score")
    shown = "—" if score is None else f"{score}"
    mos = values.get("mos")

    def num(key: str, unit: str) -> str:
        value = values.get(key)
        return "—" if value is None else f"{value} {unit}"

    return (
        f'<div class="card"><h3>{escape(SIDES[name])}</h3>'
        f'<div class="score">{shown}<small> / 100'
        f"{'' if mos is None else f' · MOS {mos}'}</small></div>"
        f'<div class="nums">loss {num("loss_pct", "%")} · jitter '
        f"{num('jitter_ms', 'ms')} · RTT {num('rtt_ms', 'ms')}</div></div>"
    )


def _evidence(evidence: dict[str, Any]) -> str:
    return " · ".join(
        f"{escape(str(k))}: {escape(str(v))}" for k, v in evidence.items()
    )


def _findings(report: dict[str, Any], now: float) -> str:
    if not report["findings"]:
        return '<div class="none">No problems found.</div>'
    out = []
    for f in report["findings"]:
        remote = f.get("remote_peer")
        out.append(
            f'<div class="finding sev-{escape(f["severity"])}">'
            f'<div class="head"><span class="tag">{escape(f["severity"])}</span>'
            f'<span class="tag">{escape(SIDES.get(f["side"], f["side"]))}</span>'
            f"{escape(f['summary'])}</div>"
            f'<div class="meta">{escape(f["code"])} · for {_ago(f["since"], now)} '
            f"(since {_clock(f['since'])})"
            f"{'' if remote is None else f' · from peer {escape(remote)}'}</div>"
            f'<div class="advice">{escape(f["advice"])}</div>'
            f'<div class="evidence">{_evidence(f["evidence"])}</div></div>'
        )
    return "".join(out)


def _timeline(report: dict[str, Any]) -> str:
    rows = []
    for e in report["timeline"][-TIMELINE_ROWS:]:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        rows.append(
            f'<tr class="ev-{escape(e["event"])}"><td class="t">{_clock(e["t"])}</td>'
            f"<td>{escape(e['event'])}</td><td>{escape(detail)}</td></tr>"
        )
    return "\n".join(rows)


def _charts(report: dict[str, Any], thresholds: Thresholds) -> str:
    s = report["series"]
    t = s["t"]
    return "".join(
        [
            chart(
                "loss",
                "Packet loss",
                "%",
                t,
                [
                    Line("uplink_loss_pct", "uplink", s["uplink_loss_pct"]),
                    Line("downlink_loss_pct", "downlink", s["downlink_loss_pct"]),
                ],
                thresholds.loss_pct,
            ),
            chart(
                "jitter",
                "Jitter",
                "ms",
                t,
                [Line("jitter_ms", "worse direction", s["jitter_ms"])],
                thresholds.jitter_warning_ms,
            ),
            chart(
                "delay",
                "Delay variation (uplink, 95th percentile)",
                "ms",
                t,
                [Line("delay_spread_ms", "uplink", s["delay_spread_ms"])],
                thresholds.delay_spread_ms,
            ),
            chart(
                "late",
                "Late packets (uplink)",
                "%",
                t,
                [Line("late_pct", "uplink", s["late_pct"])],
                thresholds.late_pct,
            ),
            chart(
                "rtt",
                "Round-trip time",
                "ms",
                t,
                [
                    Line("uplink_rtt_ms", "publish connection", s["uplink_rtt_ms"]),
                    Line("rtt_ms", "subscribe connection", s["rtt_ms"]),
                ],
                thresholds.rtt_warning_ms,
            ),
            chart(
                "level",
                "Microphone level",
                "dBov, 0 = loudest",
                t,
                [Line("level_dbov", "loudest per second", s["level_dbov"])],
                thresholds.silent_dbov,
                floor=-127.0,
            ),
            chart(
                "bitrate",
                "Microphone bitrate",
                "kbit/s",
                t,
                [Line("bitrate_kbps", "uplink", s["bitrate_kbps"])],
            ),
        ]
    )


def render(report: dict[str, Any], thresholds: Thresholds) -> str:
    now = report["generated_at"]
    template = Template(
        resources.files("diagnostics").joinpath("templates/report.html").read_text()
    )
    findings = report["findings"]
    headline = escape(findings[0]["summary"]) if findings else "no problems found"
    left = "" if report["live"] else " · left"
    return template.substitute(
        title=escape(f"{report['name']} ({report['user_id']})"),
        meta=escape(
            f"peer {report['peer_id']} · channel {report['channel']} · "
            f"{report['state']}{left} · generated {_clock(now)} UTC"
        ),
        verdict=escape(report["verdict"]),
        headline=headline,
        directions=_direction("uplink", report["uplink"])
        + _direction("downlink", report["downlink"]),
        findings=_findings(report, now),
        charts=_charts(report, thresholds),
        timeline=_timeline(report),
    )
