"""``redline bench --html``: a self-contained HTML report of one run, or of several side by side.

The page is one file: CSS inline, charts inline SVG (:mod:`redline.bench.svg`), no script, no
font, no image and no link to fetch, so it opens offline and from a mail attachment. It shows
the key figures, latency over time, the percentile curve, throughput over time, errors by
kind and status, the server-side breakdown, the cache and the run's settings. Every figure
carries ``data-figure`` (and, when comparing, ``data-run``) so tools can read it back.

Example::

    write_html([load_report("run.json")], "run.html")
    write_html([load_report("before.json"), load_report("after.json")], "compare.html")
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from redline.bench._html_parts import (
    PERCENTILE_KEYS,
    breakdown,
    cache_table,
    comparison_table,
    config_table,
    errors_comparison,
    errors_single,
    fixed,
    percent,
    percentile_chart,
    percentile_table,
    run_color,
    target,
    throughput_chart,
    timeline_note,
    timeline_rows,
    when,
)
from redline.bench.compare import report_name
from redline.bench.svg import PALETTE, Series, line_chart

__all__ = ["render_html", "write_html"]


_CSS = """
:root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --card: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 16px; color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.5rem; margin: 0 0 4px; } h2 { font-size: 1.1rem; margin: 0 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
  gap: 8px; margin-bottom: 16px; }
.figure { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 10px; }
.figure .value { font-size: 1.35rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.figure .unit, .figure .name { color: var(--muted); font-size: .85rem; }
.figure .name { display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr));
  gap: 16px; }
section { border: 1px solid var(--line); border-radius: 6px; padding: 12px; min-width: 0; }
.note { color: var(--muted); font-size: .85rem; margin: 6px 0 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 3px 8px; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; overflow-wrap: break-word; }
.better { color: #1a7f37; } .worse { color: #cf222e; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px;
  margin-right: 4px; vertical-align: baseline; }
svg.chart { width: 100%; height: auto; display: block; }
svg .grid { stroke: #eaeef2; } svg .axis { stroke: #8c959f; }
svg text { font: 12px system-ui, sans-serif; fill: var(--muted); }
svg .label { fill: var(--fg); }
@media (max-width: 600px) { svg text { font-size: 16px; } body { padding: 8px; } }
"""


def write_html(reports: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write :func:`render_html` of ``reports`` to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(reports), encoding="utf-8")


def render_html(reports: Sequence[dict[str, Any]]) -> str:
    """The page for one report, or a side-by-side comparison of several (first = baseline)."""
    if not reports:
        raise ValueError("render_html needs at least 1 report, got 0")
    if len(reports) == 1:
        title, body = _single(reports[0])
    else:
        title, body = _comparison(reports)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _single(report: dict[str, Any]) -> tuple[str, str]:
    """Title and body of a one-run page."""
    config, summary, latency = report["config"], report["summary"], report["latency_ms"]
    title = f"redline bench — {report.get('label') or target(config)}"
    hit_ratio = report["cache"]["hit_ratio"]
    figures = [
        ("requests", "requests", f"{summary['requests']:,}", ""),
        ("throughput_rps", "throughput", fixed(summary["throughput_rps"], 1), "req/s"),
        *((f"latency_{key}", key, fixed(latency[key], 2), "ms") for key in PERCENTILE_KEYS),
        ("error_ratio", "errors", percent(summary["error_ratio"]), f"({summary['errors']:,})"),
        ("cache_hit_ratio", "cache hit ratio", percent(hit_ratio), ""),
        ("elapsed_s", "elapsed", fixed(summary["elapsed_s"], 2), "s"),
        ("bottleneck", "bottleneck", report["breakdown"]["bottleneck"] or "n/a", ""),
    ]
    cards = "".join(
        f'<div class="figure"><span class="value" data-figure="{key}">{escape(value)}</span> '
        f'<span class="unit">{escape(unit)}</span><span class="name">{escape(name)}</span></div>'
        for key, name, value, unit in figures
    )
    interrupted = (
        " · <strong>interrupted: partial report</strong>" if summary["interrupted"] else ""
    )
    rows = timeline_rows(report)
    latency_series = [
        Series(name, [(row["t"], row[key]) for row in rows if row.get(key) is not None], color)
        for name, key, color in (
            ("p50", "p50_ms", PALETTE[0]),
            ("p90", "p90_ms", PALETTE[2]),
            ("p99", "p99_ms", PALETTE[1]),
            ("max", "max_ms", PALETTE[3]),
        )
    ]
    body = (
        f"<header><h1>redline bench</h1>{_subtitle(report)}{interrupted}</header>"
        f'<div class="figures">{cards}</div><div class="grid">'
        + _section(
            "Latency over time",
            line_chart(
                [s for s in latency_series if s.points],
                name="latency-over-time",
                x_label="time into the run (s)",
                y_label="latency (ms)",
            ),
            timeline_note(report, "Latency of successful requests"),
        )
        + _section("Latency percentiles", percentile_chart([report]), percentile_table([report]))
        + _section(
            "Throughput over time",
            throughput_chart([report]),
            timeline_note(report, "Completed requests per second (errors included)"),
        )
        + _section("Errors", *errors_single(report))
        + _section("Where the time went", *breakdown([report]))
        + _section("Cache", cache_table(report), "")
        + _section("Run", config_table([report]), "")
        + "</div>"
    )
    return title, body


def _comparison(reports: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Title and body of a side-by-side page."""
    names = [report_name(report, index) for index, report in enumerate(reports)]
    title = "redline bench compare — " + " vs ".join(names)
    runs = "".join(
        f'<li><span class="swatch" style="background:{run_color(index)}"></span>'
        f"<strong>{escape(name)}</strong> {_subtitle(report, tag='span')}</li>"
        for index, (name, report) in enumerate(zip(names, reports, strict=True))
    )
    latency_over_time = [
        Series(
            f"{name} {key[:3]}",
            [(row["t"], row[key]) for row in timeline_rows(report) if row.get(key) is not None],
            run_color(index),
            dashed=key == "p50_ms",
        )
        for index, (name, report) in enumerate(zip(names, reports, strict=True))
        for key in ("p50_ms", "p99_ms")
    ]
    body = (
        f'<header><h1>redline bench compare</h1><ul class="sub">{runs}</ul></header>'
        + _section("Figures (ratio vs the first run)", comparison_table(reports, names), "")
        + '<div class="grid">'
        + _section("Latency percentiles", percentile_chart(reports), "")
        + _section(
            "Latency over time",
            line_chart(
                [s for s in latency_over_time if s.points],
                name="latency-over-time",
                x_label="time into the run (s)",
                y_label="latency (ms)",
            ),
            "Solid: p99 of each bucket of time; dashed: p50.",
        )
        + _section("Throughput over time", throughput_chart(reports), "")
        + _section("Errors", *errors_comparison(reports, names))
        + _section("Where the time went", *breakdown(reports))
        + _section("Runs", config_table(reports), "")
        + "</div>"
    )
    return title, body


def _section(title: str, content: str, note: str) -> str:
    """A titled panel: content, then a note (text, or markup when it starts with ``<``)."""
    tail = note if note.startswith("<") else f'<p class="note">{escape(note)}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{content}{tail}</section>"


def _subtitle(report: dict[str, Any], tag: str = "p") -> str:
    """Mode, target and time of a run (and its label on a one-run page)."""
    config = report["config"]
    parts = [f"{config['mode']} loop", target(config), when(report)]
    if report.get("label") and tag == "p":
        parts.insert(0, str(report["label"]))
    return f'<{tag} class="sub">{escape(" · ".join(p for p in parts if p))}</{tag}>'
