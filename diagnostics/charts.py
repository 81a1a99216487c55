"""Small inline SVG line charts for the HTML report (no scripts, no network).

Each series is one or more ``<polyline class="series">`` (a gap in the data
starts a new one), so a test can count the points a chart draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 520, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 12, 22
COLORS = ("#2563eb", "#db2777", "#059669")


@dataclass(frozen=True)
class Line:
    name: str
    label: str
    values: list[float | None]


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == 0 else f"{value:.1f}"


def chart(
    key: str,
    title: str,
    unit: str,
    t: list[float],
    lines: list[Line],
    threshold: float | None = None,
    floor: float | None = 0.0,
) -> str:
    """One chart: time on x (seconds before the last point), values on y."""
    points = [v for line in lines for v in line.values if v is not None]
    low = floor if floor is not None else min(points, default=0.0)
    high = max([*points, threshold or low, low + 1e-9])
    if threshold is not None and threshold > high:
        high = threshold
    high += (high - low) * 0.1 or 1.0
    start, end = (t[0], t[-1]) if t else (0.0, 1.0)
    span = (end - start) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ti: float) -> float:
        return LEFT + (ti - start) / span * plot_w

    def y(v: float) -> float:
        return TOP + (1 - (min(max(v, low), high) - low) / (high - low)) * plot_h

    parts = [
        f'<svg class="chart" data-chart="{escape(key)}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{escape(title)}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = low + (high - low) * frac
        parts.append(
            f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" class="tick" '
            f'text-anchor="end">{_fmt(v)}</text>'
        )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 6}" class="tick">−{span:.0f} s</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" class="tick" '
        f'text-anchor="end">now</text>'
    )
    if threshold is not None:
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(threshold):.1f}" '
            f'y2="{y(threshold):.1f}" class="threshold"/>'
        )
    for color, line in zip(COLORS, lines, strict=False):
        for run in _runs(t, line.values):
            coords = " ".join(f"{x(ti):.1f},{y(v):.1f}" for ti, v in run)
            parts.append(
                f'<polyline class="series" data-series="{escape(line.name)}" '
                f'stroke="{color}" points="{coords}"/>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{color}"></i>{escape(line.label)}'
        "</span>"
        for color, line in zip(COLORS, lines, strict=False)
    )
    return (
        f"<figure><figcaption>{escape(title)} <small>({escape(unit)})</small>"
        f"{legend}</figcaption>{''.join(parts)}</figure>"
    )


def _runs(
    t: list[float], values: list[float | None]
) -> list[list[tuple[float, float]]]:
    """Consecutive points with values (a single point is drawn as a dot)."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for ti, v in zip(t, values, strict=False):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((ti, v))
    if current:
        runs.append(current)
    return [run if len(run) > 1 else run * 2 for run in runs]
