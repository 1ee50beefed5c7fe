"""Inline SVG charts drawn by our own code: line charts and horizontal bars, no JavaScript.

Every chart is one ``<svg>`` element with a ``viewBox``, so it scales to the page width (a
phone included) and needs nothing from the network. Each series is a ``<polyline>`` (plus a
dot per point when there are few) carrying ``data-series`` and ``data-points``, and a
``<title>`` that browsers show on hover.

Example::

    chart = line_chart(
        [Series("p99", [(0, 4.1), (1, 5.3)])],
        name="latency-over-time", x_label="time (s)", y_label="ms",
    )
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Bar", "Series", "bar_chart", "line_chart", "nice_ticks"]

#: Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#000000")

_WIDTH, _HEIGHT = 480, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 66, 16, 14, 70
_FEW_POINTS = 40
_LEGEND_ROW = 18


@dataclass(frozen=True)
class Series:
    """One line: a name for the legend, its (x, y) points, a colour and a dash style."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: stacked segments of (name, value, colour)."""

    label: str
    segments: Sequence[tuple[str, float, str]]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) over low..high.

    Example::

        nice_ticks(0, 9.3)  # [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _number(value: float) -> str:
    """A tick label: no trailing zeros, thousands separated."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    series: Sequence[Series],
    *,
    name: str,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_floor_zero: bool = True,
) -> str:
    """An SVG line chart; ``x_ticks`` overrides the x axis with (position, label) pairs."""
    points = [point for line in series for point in line.points]
    if not points:
        return _empty(name, "no data")
    xs = [x for x, _y in points]
    ys = [y for _x, y in points]
    if x_ticks:
        x_low, x_high = min(xs + [p for p, _ in x_ticks]), max(xs + [p for p, _ in x_ticks])
        x_labels = list(x_ticks)
    else:
        ticks = nice_ticks(min(xs), max(xs))
        x_low, x_high = ticks[0], ticks[-1]
        x_labels = [(t, _number(t)) for t in ticks]
    y_ticks = nice_ticks(0.0 if y_floor_zero else min(ys), max(ys))
    y_low, y_high = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x_low) / ((x_high - x_low) or 1.0) * plot_w

    def py(y: float) -> float:
        return _TOP + plot_h - (y - y_low) / ((y_high - y_low) or 1.0) * plot_h

    legend, rows = _legend([(line.name, line.color, line.dashed) for line in series], _HEIGHT - 12)
    parts = [_open(name, _HEIGHT + _LEGEND_ROW * (rows - 1))]
    parts.append(_axes(x_labels, px, [(t, _number(t)) for t in y_ticks], py, x_label, y_label))
    for line in series:
        if not line.points:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line.points)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(
            f'<g data-series="{escape(line.name)}" data-points="{len(line.points)}">'
            f"<title>{escape(line.name)}</title>"
            f'<polyline points="{coords}" fill="none" stroke="{line.color}" '
            f'stroke-width="2" stroke-linejoin="round"{dash}/>'
        )
        if len(line.points) <= _FEW_POINTS:
            for x, y in line.points:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{line.color}"/>'
                )
        parts.append("</g>")
    parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(bars: Sequence[Bar], *, name: str, unit: str) -> str:
    """Horizontal (stacked) bars, one row each, the total written at the end of the bar."""
    if not bars:
        return _empty(name, "none")
    row, label_w, value_w = 30, 130, 80
    names = {name: color for bar in bars for name, _value, color in bar.segments}
    legend, rows = _legend([(n, c, False) for n, c in names.items()], _TOP + row * len(bars) + 24)
    stacked = any(len(bar.segments) > 1 for bar in bars)
    height = _TOP + row * len(bars) + (14 + _LEGEND_ROW * rows if stacked else 10)
    peak = max(sum(value for _n, value, _c in bar.segments) for bar in bars) or 1.0
    plot_w = _WIDTH - label_w - value_w
    parts = [_open(name, height)]
    for index, bar in enumerate(bars):
        y = _TOP + index * row
        parts.append(
            f'<g data-bar="{escape(bar.label)}"><text x="{label_w - 8}" y="{y + 19}" '
            f'text-anchor="end" class="label">{escape(_clip(bar.label, 16))}</text>'
        )
        x = float(label_w)
        for segment, value, color in bar.segments:
            width = value / peak * plot_w
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{max(width, 0.0):.1f}" height="20" '
                f'fill="{color}"><title>{escape(segment)}: {_number(value)} {escape(unit)}'
                "</title></rect>"
            )
            x += width
        total = sum(value for _n, value, _c in bar.segments)
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + 19}" class="label">{_number(total)} {escape(unit)}'
            "</text></g>"
        )
    if stacked:
        parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


def _open(name: str, height: int = _HEIGHT) -> str:
    """The ``<svg>`` start tag of a chart named ``name``."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" '
        f'class="chart" data-chart="{escape(name)}" role="img" aria-label="{escape(name)}">'
    )


def _axes(
    x_ticks: Sequence[tuple[float, str]],
    px: Callable[[float], float],
    y_ticks: Sequence[tuple[float, str]],
    py: Callable[[float], float],
    x_label: str,
    y_label: str,
) -> str:
    """Grid lines, tick labels and axis titles."""
    left, right = _LEFT, _WIDTH - _RIGHT
    top, bottom = _TOP, _HEIGHT - _BOTTOM
    parts = []
    for value, label in y_ticks:
        y = py(value)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
        )
    for value, label in x_ticks:
        x = px(value)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="tick">'
            f"{escape(label)}</text>"
        )
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" class="axis"/>')
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 38}" text-anchor="middle" '
        f'class="label">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{(top + bottom) / 2:.1f}" text-anchor="middle" class="label" '
        f'transform="rotate(-90 14 {(top + bottom) / 2:.1f})">{escape(y_label)}</text>'
    )
    return "".join(parts)


def _legend(entries: Sequence[tuple[str, str, bool]], y: float) -> tuple[str, int]:
    """Colour swatches and names under the plot, wrapped into rows; (markup, rows used)."""
    parts = ['<g class="legend">']
    x, row = float(_LEFT), 0
    for label, color, dashed in entries:
        step = 40 + 9.0 * min(len(label), 24)
        if x + step > _WIDTH and x > _LEFT:
            x, row = float(_LEFT), row + 1
        top = y + row * _LEGEND_ROW
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4:.1f}" x2="{x + 22:.1f}" y2="{top - 4:.1f}" '
            f'stroke="{color}" stroke-width="3"{dash}/>'
            f'<text x="{x + 28:.1f}" y="{top:.1f}" class="label">{escape(_clip(label, 24))}</text>'
        )
        x += step
    parts.append("</g>")
    return "".join(parts), row + 1


def _empty(name: str, message: str) -> str:
    """A short chart that says there is nothing to draw."""
    return (
        f'{_open(name, 60)}<text x="{_WIDTH / 2}" y="34" text-anchor="middle" class="label">'
        f"{escape(message)}</text></svg>"
    )


def _clip(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters with an ellipsis."""
    return text if len(text) <= length else text[: length - 1] + "…"
