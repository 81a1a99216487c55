"""The audio-diagnosis report as HTML: ``diagnostics.page.render`` of a report
dict in the documented shape (docs/protocol.md, "The audio-diagnosis report")
shows the verdict, scores, findings and timeline with every user-controlled
string escaped, and ``diagnostics.charts.chart`` draws the series as SVG."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from diagnostics.charts import HEIGHT, LEFT, TOP, WIDTH, Line, chart
from diagnostics.page import TIMELINE_ROWS, render
from diagnostics.thresholds import Thresholds

NOW = 1764115200.0  # 00:00:00 UTC
EVIL = "<script>alert(1)</script>"


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "peer_id": "a1b2c3d4e5f6",
        "user_id": "alice",
        "name": "Alice",
        "channel": "general",
        "state": "connected",
        "live": True,
        "generated_at": NOW,
        "verdict": "degraded",
        "uplink": {
            "score": 62,
            "mos": 3.4,
            "loss_pct": 10.2,
            "jitter_ms": 2.1,
            "rtt_ms": 3.0,
        },
        "downlink": {
            "score": 91,
            "mos": 4.2,
            "loss_pct": 0.1,
            "jitter_ms": 2.5,
            "rtt_ms": 3.0,
        },
        "findings": [
            {
                "code": "uplink_loss",
                "severity": "warning",
                "side": "uplink",
                "since": NOW - 100,
                "summary": "10.2 % of this user's audio packets are lost",
                "evidence": {"loss_pct": 10.2, "threshold_pct": 3.0},
                "advice": "Check the user's Wi-Fi.",
            }
        ],
        "timeline": [
            {"t": NOW - 120.25, "event": "joined", "detail": {}},
            {"t": NOW - 119.0, "event": "state", "detail": {"state": "connected"}},
        ],
        "series": {
            "t": [NOW - 6, NOW - 4, NOW - 2, NOW],
            "uplink_loss_pct": [0.0, 12.0, None, 10.0],
            "downlink_loss_pct": [0.0, 0.0, 0.1, 0.0],
            "jitter_ms": [2.0, 2.5, 2.1, 2.4],
            "rtt_ms": [3.0, 3.1, None, None],
            "uplink_rtt_ms": [2.0, None, 2.2, 2.1],
            "delay_spread_ms": [8.0, 95.0, 110.0, 12.0],
            "late_pct": [0.0, 4.0, 6.5, 0.0],
            "level_dbov": [-30.0, -28.0, -35.0, -31.0],
            "bitrate_kbps": [32.1, 31.9, 32.0, 32.2],
        },
    }
    base.update(changes)
    return base


def page(data: dict[str, Any] | None = None) -> str:
    return render(data or report(), Thresholds())


def svg(html: str, key: str) -> str:
    match = re.search(rf'<svg class="chart" data-chart="{key}".*?</svg>', html, re.S)
    assert match, key
    return match.group(0)


def polylines(svg_text: str, series: str) -> list[list[tuple[float, float]]]:
    found = re.findall(
        rf'<polyline class="series" data-series="{series}" [^>]*points="([^"]*)"',
        svg_text,
    )
    return [
        [tuple(float(v) for v in pair.split(",")) for pair in points.split()]
        for points in found
    ]


# --- the page ---------------------------------------------------------------------


def test_page_is_a_whole_document_without_template_holes():
    html = page()
    assert html.startswith("<!doctype html>")
    assert html.rstrip().endswith("</html>")
    assert "$" not in html


def test_page_shows_the_verdict_and_headline():
    html = page()
    assert '<div class="verdict verdict-degraded"><b>degraded</b>' in html
    assert (
        "<b>degraded</b>10.2 % of this user&#x27;s audio packets are lost</div>" in html
    )


@pytest.mark.parametrize("verdict", ["ok", "degraded", "broken"])
def test_page_verdict_class(verdict):
    assert f"verdict-{verdict}" in page(report(verdict=verdict))


def test_page_title_and_meta():
    html = page()
    assert "<title>Audio report · Alice (alice)</title>" in html
    assert (
        "peer a1b2c3d4e5f6 · channel general · connected · generated 00:00:00.000 UTC"
        in html
    )


def test_departed_peer_is_marked_left():
    assert "connected · left · generated" in page(report(live=False))


def test_page_shows_direction_scores():
    html = page()
    assert "uplink (user → server)" in html
    assert '<div class="score">62<small> / 100 · MOS 3.4</small></div>' in html
    assert "loss 10.2 % · jitter 2.1 ms · RTT 3.0 ms" in html


def test_unknown_scores_show_a_dash():
    unknown = {
        "score": None,
        "mos": None,
        "loss_pct": None,
        "jitter_ms": None,
        "rtt_ms": None,
    }
    html = page(report(uplink=unknown))
    assert '<div class="score">—<small> / 100</small></div>' in html
    assert "loss — · jitter — · RTT —" in html


def test_page_shows_the_findings():
    html = page()
    assert '<div class="finding sev-warning">' in html
    assert "uplink_loss · for 100 s (since 23:58:20.000)" in html
    assert '<div class="advice">Check the user&#x27;s Wi-Fi.</div>' in html
    assert '<div class="evidence">loss_pct: 10.2 · threshold_pct: 3.0</div>' in html


def test_finding_remote_peer_is_named():
    findings = copy.deepcopy(report()["findings"])
    findings[0]["remote_peer"] = "bbbb"
    assert " · from peer bbbb</div>" in page(report(findings=findings))


@pytest.mark.parametrize(
    ("ago", "shown"), [(30, "30 s"), (600, "10 min"), (10800, "3 h")]
)
def test_finding_age(ago, shown):
    findings = copy.deepcopy(report()["findings"])
    findings[0]["since"] = NOW - ago
    assert f"uplink_loss · for {shown} (since" in page(report(findings=findings))


def test_no_findings():
    html = page(report(findings=[], verdict="ok"))
    assert '<div class="none">No problems found.</div>' in html
    assert "<b>ok</b>no problems found</div>" in html


def test_page_shows_the_timeline():
    html = page()
    assert (
        '<tr class="ev-joined"><td class="t">23:57:59.750</td><td>joined</td><td></td></tr>'
        in html
    )
    assert "<td>state</td><td>state=connected</td>" in html


def test_timeline_shows_only_the_newest_rows():
    timeline = [
        {"t": NOW - 1000 + i, "event": f"e{i}", "detail": {}}
        for i in range(TIMELINE_ROWS + 5)
    ]
    html = page(report(timeline=timeline))
    assert html.count('<tr class="ev-') == TIMELINE_ROWS
    assert "<td>e4</td>" not in html
    assert "<td>e5</td>" in html
    assert f"<td>e{TIMELINE_ROWS + 4}</td>" in html


# --- escaping ---------------------------------------------------------------------


def evil_report() -> dict[str, Any]:
    data = report(name=EVIL, user_id=EVIL, channel=EVIL, peer_id=EVIL, state=EVIL)
    data["findings"][0].update(
        summary=EVIL, advice=EVIL, code=EVIL, remote_peer=EVIL, evidence={EVIL: EVIL}
    )
    data["timeline"] = [{"t": NOW, "event": EVIL, "detail": {EVIL: EVIL}}]
    return data


def test_user_controlled_strings_are_escaped():
    html = page(evil_report())
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.mark.parametrize(
    "expected",
    [
        f"<title>Audio report · {ESCAPED} ({ESCAPED})</title>",
        f"<h1>{ESCAPED} ({ESCAPED})</h1>",
        f'<div class="meta">peer {ESCAPED} · channel {ESCAPED} · {ESCAPED} · generated',
        f"<b>degraded</b>{ESCAPED}</div>",
        f'<div class="advice">{ESCAPED}</div>',
        f'<div class="evidence">{ESCAPED}: {ESCAPED}</div>',
        f" · from peer {ESCAPED}</div>",
        f'<tr class="ev-{ESCAPED}">',
        f"<td>{ESCAPED}={ESCAPED}</td>",
    ],
    ids=[
        "title",
        "h1",
        "meta",
        "headline",
        "advice",
        "evidence",
        "remote-peer",
        "event",
        "detail",
    ],
)
def test_escaped_everywhere(expected):
    assert expected in page(evil_report())


# --- charts in the page -----------------------------------------------------------


def test_page_has_the_seven_charts():
    keys = re.findall(r'<svg class="chart" data-chart="([a-z]+)"', page())
    assert keys == ["loss", "jitter", "delay", "late", "rtt", "level", "bitrate"]


def test_delay_chart_draws_the_uplink_spread():
    delay = svg(page(), "delay")
    assert [len(run) for run in polylines(delay, "delay_spread_ms")] == [4]
    assert 'class="threshold"' in delay


def test_loss_chart_breaks_at_a_gap():
    loss = svg(page(), "loss")
    runs = polylines(loss, "uplink_loss_pct")
    assert [len(run) for run in runs] == [2, 2]  # 2 points, then 1 drawn as a dot
    assert runs[1][0] == runs[1][1]
    assert [len(run) for run in polylines(loss, "downlink_loss_pct")] == [4]


def test_chart_without_data_has_no_series():
    series = dict(report()["series"], rtt_ms=[None] * 4, uplink_rtt_ms=[None] * 4)
    rtt = svg(page(report(series=series)), "rtt")
    assert "<polyline" not in rtt
    assert 'class="threshold"' in rtt


def test_level_chart_is_drawn_from_minus_127():
    ticks = re.findall(
        r'class="tick" text-anchor="end">([^<]*)</text>', svg(page(), "level")
    )
    assert ticks[0] == "-127"  # the bottom tick: the floor


# --- chart ------------------------------------------------------------------------


def test_chart_points_span_the_plot():
    out = chart("k", "T", "u", [0.0, 5.0, 10.0], [Line("s", "S", [0.0, 5.0, 10.0])])
    (run,) = polylines(out, "s")
    xs = [x for x, _ in run]
    ys = [y for _, y in run]
    assert xs == [LEFT, LEFT + (WIDTH - LEFT - 10) / 2, WIDTH - 10]
    assert ys[0] == HEIGHT - 22  # the floor at the bottom
    assert ys[0] > ys[1] > ys[2] >= TOP  # higher values drawn higher


def test_chart_threshold_above_the_data_is_in_view():
    out = chart("k", "T", "u", [0.0, 1.0], [Line("s", "S", [1.0, 2.0])], threshold=50.0)
    y = float(re.search(r'<line x1="[^"]*" x2="[^"]*" y1="([0-9.]+)"', out).group(1))
    (run,) = polylines(out, "s")
    assert TOP <= y < min(point_y for _, point_y in run)


def test_chart_lines_get_distinct_colours_and_legend():
    out = chart(
        "k",
        "T",
        "u",
        [0.0, 1.0],
        [Line("a", "first", [1.0, 2.0]), Line("b", "second", [2.0, 1.0])],
    )
    colours = re.findall(r'data-series="[ab]" stroke="(#[0-9a-f]+)"', out)
    assert len(set(colours)) == 2
    assert "first</span>" in out and "second</span>" in out


def test_chart_escapes_key_title_and_labels():
    out = chart(EVIL, EVIL, EVIL, [0.0], [Line(EVIL, EVIL, [1.0])])
    assert "<script" not in out
    assert 'data-chart="&lt;script&gt;' in out


def test_chart_time_axis_names_the_span():
    out = chart("k", "T", "u", [100.0, 160.0], [Line("s", "S", [1.0, 1.0])])
    assert "−60 s</text>" in out
    assert ">now</text>" in out


def test_chart_of_no_samples():
    out = chart("k", "T", "u", [], [Line("s", "S", [])])
    assert out.startswith("<figure>")
    assert "<polyline" not in out
