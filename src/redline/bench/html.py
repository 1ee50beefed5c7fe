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

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from redline.bench.compare import COMPARED_METRICS, comparison_rows, report_name
from redline.bench.svg import PALETTE, Bar, Series, bar_chart, line_chart

__all__ = ["render_html", "write_html"]

#: Percentiles (x = 1 / (1 - p)) at which the percentile curve is labelled.
_NINES = ((2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%"))
_STAGE_COLORS = {"cache": PALETTE[2], "queue": PALETTE[1], "inference": PALETTE[0]}
_OTHER_COLORS = (PALETTE[4], PALETTE[5], PALETTE[3], PALETTE[6])

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
    title = f"redline bench — {report.get('label') or _target(config)}"
    hit_ratio = report["cache"]["hit_ratio"]
    figures = [
        ("requests", "requests", f"{summary['requests']:,}", ""),
        ("throughput_rps", "throughput", _fixed(summary["throughput_rps"], 1), "req/s"),
        *((f"latency_{key}", key, _fixed(latency[key], 2), "ms") for key in _PERCENTILE_KEYS),
        ("error_ratio", "errors", _percent(summary["error_ratio"]), f"({summary['errors']:,})"),
        ("cache_hit_ratio", "cache hit ratio", _percent(hit_ratio), ""),
        ("elapsed_s", "elapsed", _fixed(summary["elapsed_s"], 2), "s"),
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
    rows = _timeline_rows(report)
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
            _timeline_note(report, "Latency of successful requests"),
        )
        + _section("Latency percentiles", _percentile_chart([report]), _percentile_table([report]))
        + _section(
            "Throughput over time",
            _throughput_chart([report]),
            _timeline_note(report, "Completed requests per second (errors included)"),
        )
        + _section("Errors", *_errors_single(report))
        + _section("Where the time went", *_breakdown([report]))
        + _section("Cache", _cache_table(report), "")
        + _section("Run", _config_table([report]), "")
        + "</div>"
    )
    return title, body


def _comparison(reports: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Title and body of a side-by-side page."""
    names = [report_name(report, index) for index, report in enumerate(reports)]
    title = "redline bench compare — " + " vs ".join(names)
    runs = "".join(
        f'<li><span class="swatch" style="background:{_run_color(index)}"></span>'
        f"<strong>{escape(name)}</strong> {_subtitle(report, tag='span')}</li>"
        for index, (name, report) in enumerate(zip(names, reports, strict=True))
    )
    latency_over_time = [
        Series(
            f"{name} {key[:3]}",
            [(row["t"], row[key]) for row in _timeline_rows(report) if row.get(key) is not None],
            _run_color(index),
            dashed=key == "p50_ms",
        )
        for index, (name, report) in enumerate(zip(names, reports, strict=True))
        for key in ("p50_ms", "p99_ms")
    ]
    body = (
        f'<header><h1>redline bench compare</h1><ul class="sub">{runs}</ul></header>'
        + _section("Figures (ratio vs the first run)", _comparison_table(reports, names), "")
        + '<div class="grid">'
        + _section("Latency percentiles", _percentile_chart(reports), "")
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
        + _section("Throughput over time", _throughput_chart(reports), "")
        + _section("Errors", *_errors_comparison(reports, names))
        + _section("Where the time went", *_breakdown(reports))
        + _section("Runs", _config_table(reports), "")
        + "</div>"
    )
    return title, body


_PERCENTILE_KEYS = ("p50", "p90", "p99", "p99.9", "max")


def _percentile_chart(reports: Sequence[dict[str, Any]]) -> str:
    """The HDR curve: x spaced by "nines" (1 / (1 - p) on a log scale)."""
    series = []
    for index, report in enumerate(reports):
        curve = report["latency_distribution"]
        points = [(math.log10(1.0 / (1.0 - min(p, 99.999) / 100.0)), ms) for p, ms in curve]
        series.append(Series(report_name(report, index), points, _run_color(index)))
    ticks = [(math.log10(x), label) for x, label in _NINES]
    return line_chart(
        [s for s in series if s.points],
        name="percentiles",
        x_label="percentile",
        y_label="latency (ms)",
        x_ticks=ticks,
    )


def _percentile_table(reports: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{key}</th>" for key in _PERCENTILE_KEYS)
    rows = "".join(
        f"<tr><td>{escape(report_name(report, index))}</td>"
        + "".join(
            f'<td data-figure="table_{key}">{_fixed(report["latency_ms"][key], 2)}</td>'
            for key in _PERCENTILE_KEYS
        )
        + "</tr>"
        for index, report in enumerate(reports)
    )
    return f'<div class="scroll"><table><tr><th>ms</th>{head}</tr>{rows}</table></div>'


def _timeline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The timeline rows to draw: all but a last bucket under half as long as the others.

    A run's final bucket holds only the stragglers of its last moments (a closed loop's
    draining requests): as a rate, or as percentiles of a handful, it would mislead.
    Older reports have no ``seconds``: every row counts as a full bucket.
    """
    rows: list[dict[str, Any]] = report.get("timeline") or []
    if len(rows) > 1 and rows[-1].get("seconds", 1.0) < 0.5 * rows[-2].get("seconds", 1.0):
        return rows[:-1]
    return rows


def _bucket_s(report: dict[str, Any]) -> float:
    rows: list[dict[str, Any]] = report.get("timeline") or []
    return float(rows[0].get("seconds", 1.0)) if len(rows) > 1 else 1.0


def _throughput_chart(reports: Sequence[dict[str, Any]]) -> str:
    series = []
    for index, report in enumerate(reports):
        rows = _timeline_rows(report)
        color = _run_color(index) if len(reports) > 1 else PALETTE[0]
        name = report_name(report, index) if len(reports) > 1 else "requests/s"
        series.append(Series(name, [(row["t"], row["rps"]) for row in rows], color))
        if len(reports) == 1 and any(row["errors"] for row in rows):
            errors = [(row["t"], row["errors"] / row.get("seconds", 1.0)) for row in rows]
            series.append(Series("errors/s", errors, PALETTE[3], dashed=True))
    return line_chart(
        [s for s in series if s.points],
        name="throughput-over-time",
        x_label="time into the run (s)",
        y_label="requests / s",
    )


def _timeline_note(report: dict[str, Any], what: str) -> str:
    bucket = _bucket_s(report)
    note = f"{what}, in buckets of {bucket:g} s by when they completed."
    if len(_timeline_rows(report)) < len(report.get("timeline") or []):
        note += " The short last bucket is not drawn."
    return note


def _errors_single(report: dict[str, Any]) -> tuple[str, str]:
    """A bar per error kind (or "No errors."), then responses by HTTP status."""
    by_kind: dict[str, int] = report["errors"]["by_kind"]
    bars = [Bar(kind, [(kind, count, PALETTE[3])]) for kind, count in by_kind.items()]
    kinds = "".join(
        f'<tr><td>{escape(kind)}</td><td data-figure="error:{escape(kind)}">{count:,}</td></tr>'
        for kind, count in by_kind.items()
    )
    if by_kind:
        shown = bar_chart(bars, name="errors-by-kind", unit="")
        shown += f"<table><tr><th>error kind</th><th>requests</th></tr>{kinds}</table>"
    else:
        shown = '<p data-figure="no-errors">No errors.</p>'
    statuses = "".join(
        f'<tr><td>HTTP {escape(code)}</td><td data-figure="status:{escape(code)}">{count:,}</td>'
        "</tr>"
        for code, count in report["errors"]["by_status"].items()
    )
    return shown, f"<table><tr><th>status</th><th>responses</th></tr>{statuses}</table>"


def _errors_comparison(reports: Sequence[dict[str, Any]], names: list[str]) -> tuple[str, str]:
    kinds = sorted({kind for report in reports for kind in report["errors"]["by_kind"]})
    colors = {kind: _OTHER_COLORS[i % len(_OTHER_COLORS)] for i, kind in enumerate(kinds)}
    bars = [
        Bar(
            name, [(kind, report["errors"]["by_kind"].get(kind, 0), colors[kind]) for kind in kinds]
        )
        for name, report in zip(names, reports, strict=True)
    ]
    head = "".join(f"<th>{escape(name)}</th>" for name in names)
    rows = "".join(
        f"<tr><td>{escape(kind)}</td>"
        + "".join(
            f'<td data-run="{index}" data-figure="error:{escape(kind)}">'
            f"{report['errors']['by_kind'].get(kind, 0):,}</td>"
            for index, report in enumerate(reports)
        )
        + "</tr>"
        for kind in kinds
    )
    if not kinds:
        return '<p class="note" data-figure="no-errors">No errors in any run.</p>', ""
    chart = bar_chart(bars, name="errors-by-kind", unit="")
    return chart, f'<div class="scroll"><table><tr><th>kind</th>{head}</tr>{rows}</table></div>'


def _breakdown(reports: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Stacked bars of mean ms per stage (one per run) and the table under them."""
    stages: list[str] = []
    for report in reports:
        for stage in report["breakdown"]["stages_ms"]:
            if stage not in stages:
                stages.append(stage)
    if not stages:
        return (
            '<p class="note" data-figure="no-breakdown">No server-side breakdown: the server '
            "sent no Server-Timing header and exports no redline /metrics.</p>",
            "",
        )
    others = iter(_OTHER_COLORS)
    colors = {stage: _STAGE_COLORS.get(stage) or next(others, "#8c959f") for stage in stages}
    bars = []
    for index, report in enumerate(reports):
        stages_ms = report["breakdown"]["stages_ms"]
        segments = [
            (stage, stages_ms[stage], colors[stage]) for stage in stages if stage in stages_ms
        ]
        bars.append(Bar(report_name(report, index), segments))
    head = "".join(
        f"<th>{escape(report_name(report, index))}</th>" for index, report in enumerate(reports)
    )
    cells = []
    for stage in stages:
        row = f'<tr><td><span class="swatch" style="background:{colors[stage]}"></span>{stage}</td>'
        for index, report in enumerate(reports):
            breakdown = report["breakdown"]
            value = breakdown["stages_ms"].get(stage)
            mark = "\u00a0◀" if stage == breakdown["bottleneck"] else ""
            shown = (
                "n/a"
                if value is None
                else f"{_fixed(value, 2)} ms ({breakdown['shares'][stage]:.0%}){mark}"
            )
            run = f' data-run="{index}"' if len(reports) > 1 else ""
            row += f'<td{run} data-figure="stage:{escape(stage)}">{shown}</td>'
        cells.append(row + "</tr>")
    sources = ", ".join(sorted({r["breakdown"]["source"] for r in reports} - {None}))
    table = (
        f'<div class="scroll"><table><tr><th>mean per request</th>{head}</tr>{"".join(cells)}'
        f'</table></div><p class="note">From {escape(sources)}. "other" is what the named '
        "stages leave of the client-measured latency (HTTP, framework, network). ◀ bottleneck."
        "</p>"
    )
    return bar_chart(bars, name="breakdown", unit="ms"), table


def _cache_table(report: dict[str, Any]) -> str:
    cache = report["cache"]
    rows = [
        (
            "responses: hit / miss / partial",
            f"{cache['hit']:,} / {cache['miss']:,} / {cache['partial']:,}",
        ),
        ("hit ratio (X-Cache)", _percent(cache["hit_ratio"])),
    ]
    for tier, counts in cache["tiers"].items():
        rows.append((f"{tier} tier hit ratio (server)", _percent(counts["hit_ratio"])))
    return _key_values(rows)


def _config_table(reports: Sequence[dict[str, Any]]) -> str:
    """The settings of each run, one column per run."""
    head = "".join(
        f"<th>{escape(report_name(report, index))}</th>" for index, report in enumerate(reports)
    )
    keys = ("mode", "concurrency", "requests", "duration_s", "rate", "warmup_s", "processes")
    table = [(key, [report["config"].get(key) for report in reports]) for key in keys]
    table.append(("path", [report["config"]["workload"].get("path") for report in reports]))
    table.append(("model", [report["config"]["workload"].get("model") for report in reports]))
    table.append(("created", [_when(report) for report in reports]))
    rows = "".join(
        f"<tr><td>{key}</td>" + "".join(f"<td>{escape(_plain(v))}</td>" for v in values) + "</tr>"
        for key, values in table
    )
    return f'<div class="scroll"><table><tr><th></th>{head}</tr>{rows}</table></div>'


def _comparison_table(reports: Sequence[dict[str, Any]], names: list[str]) -> str:
    head = "".join(
        f'<th><span class="swatch" style="background:{_run_color(i)}"></span>{escape(n)}</th>'
        for i, n in enumerate(names)
    )
    body = []
    for (title, values, ratios), metric in zip(
        comparison_rows(reports), COMPARED_METRICS, strict=True
    ):
        higher_is_better = metric[3]
        cells = []
        for index, (value, ratio) in enumerate(zip(values, ratios, strict=True)):
            shown = "n/a" if value is None else _compact(value)
            if index and value is not None and ratio is not None and ratio != 1:
                better = ratio > 1 if higher_is_better else ratio < 1
                css = "better" if better else "worse"
                shown += f' <span class="{css}">({ratio:.2f}x)</span>'
            cells.append(f'<td data-run="{index}" data-figure="{escape(metric[0])}">{shown}</td>')
        body.append(f"<tr><td>{escape(title)}</td>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr><th></th>{head}</tr>{"".join(body)}</table></div>'


def _section(title: str, content: str, note: str) -> str:
    tail = note if note.startswith("<") else f'<p class="note">{escape(note)}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{content}{tail}</section>"


def _subtitle(report: dict[str, Any], tag: str = "p") -> str:
    config = report["config"]
    parts = [f"{config['mode']} loop", _target(config), _when(report)]
    if report.get("label") and tag == "p":
        parts.insert(0, str(report["label"]))
    return f'<{tag} class="sub">{escape(" · ".join(p for p in parts if p))}</{tag}>'


def _when(report: dict[str, Any]) -> str:
    """``created`` as people read it: ``2026-01-01 12:00:00 UTC``."""
    created = str(report.get("created") or "")
    return created.replace("T", " ").replace("+00:00", " UTC")


def _target(config: dict[str, Any]) -> str:
    return f"{config['url']}{config['workload'].get('path', '')}"


def _key_values(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _run_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _fixed(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def _compact(value: float) -> str:
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _plain(value: object) -> str:
    return "—" if value is None else str(value)
