"""The parts of the HTML bench report: charts, tables and figure formatting.

:mod:`redline.bench.html` lays these out as a page. Each builder takes JSON reports (one, or
several side by side) and returns markup; every figure a test or tool may read back carries
``data-figure`` (and ``data-run`` when comparing runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from redline.bench.compare import COMPARED_METRICS, comparison_rows, report_name
from redline.bench.svg import PALETTE, Bar, Series, bar_chart, line_chart

#: Percentiles (x = 1 / (1 - p)) at which the percentile curve is labelled.
_NINES = ((2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%"))
_STAGE_COLORS = {"cache": PALETTE[2], "queue": PALETTE[1], "inference": PALETTE[0]}
_OTHER_COLORS = (PALETTE[4], PALETTE[5], PALETTE[3], PALETTE[6])

PERCENTILE_KEYS = ("p50", "p90", "p99", "p99.9", "max")


def percentile_chart(reports: Sequence[dict[str, Any]]) -> str:
    """The HDR curve: x spaced by "nines" (1 / (1 - p) on a log scale)."""
    series = []
    for index, report in enumerate(reports):
        curve = report["latency_distribution"]
        points = [(math.log10(1.0 / (1.0 - min(p, 99.999) / 100.0)), ms) for p, ms in curve]
        series.append(Series(report_name(report, index), points, run_color(index)))
    ticks = [(math.log10(x), label) for x, label in _NINES]
    return line_chart(
        [s for s in series if s.points],
        name="percentiles",
        x_label="percentile",
        y_label="latency (ms)",
        x_ticks=ticks,
    )


def percentile_table(reports: Sequence[dict[str, Any]]) -> str:
    """p50 .. max of each run as a table."""
    head = "".join(f"<th>{key}</th>" for key in PERCENTILE_KEYS)
    rows = "".join(
        f"<tr><td>{escape(report_name(report, index))}</td>"
        + "".join(
            f'<td data-figure="table_{key}">{fixed(report["latency_ms"][key], 2)}</td>'
            for key in PERCENTILE_KEYS
        )
        + "</tr>"
        for index, report in enumerate(reports)
    )
    return f'<div class="scroll"><table><tr><th>ms</th>{head}</tr>{rows}</table></div>'


def timeline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
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
    """The width of the report's timeline buckets (1 s for reports that do not say)."""
    rows: list[dict[str, Any]] = report.get("timeline") or []
    return float(rows[0].get("seconds", 1.0)) if len(rows) > 1 else 1.0


def throughput_chart(reports: Sequence[dict[str, Any]]) -> str:
    """Requests per second over time; errors per second too for a single run."""
    series = []
    for index, report in enumerate(reports):
        rows = timeline_rows(report)
        color = run_color(index) if len(reports) > 1 else PALETTE[0]
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


def timeline_note(report: dict[str, Any], what: str) -> str:
    """The caption of a time chart: bucket width, and whether a short tail was left out."""
    bucket = _bucket_s(report)
    note = f"{what}, in buckets of {bucket:g} s by when they completed."
    if len(timeline_rows(report)) < len(report.get("timeline") or []):
        note += " The short last bucket is not drawn."
    return note


def errors_single(report: dict[str, Any]) -> tuple[str, str]:
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


def errors_comparison(reports: Sequence[dict[str, Any]], names: list[str]) -> tuple[str, str]:
    """One bar per run stacked by error kind, and the counts as a table."""
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


def breakdown(reports: Sequence[dict[str, Any]]) -> tuple[str, str]:
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
                else f"{fixed(value, 2)} ms ({breakdown['shares'][stage]:.0%}){mark}"
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


def cache_table(report: dict[str, Any]) -> str:
    """X-Cache counts and hit ratio, and each server tier's hit ratio."""
    cache = report["cache"]
    rows = [
        (
            "responses: hit / miss / partial",
            f"{cache['hit']:,} / {cache['miss']:,} / {cache['partial']:,}",
        ),
        ("hit ratio (X-Cache)", percent(cache["hit_ratio"])),
    ]
    for tier, counts in cache["tiers"].items():
        rows.append((f"{tier} tier hit ratio (server)", percent(counts["hit_ratio"])))
    return _key_values(rows)


def config_table(reports: Sequence[dict[str, Any]]) -> str:
    """The settings of each run, one column per run."""
    head = "".join(
        f"<th>{escape(report_name(report, index))}</th>" for index, report in enumerate(reports)
    )
    keys = ("mode", "concurrency", "requests", "duration_s", "rate", "warmup_s", "processes")
    table = [(key, [report["config"].get(key) for report in reports]) for key in keys]
    table.append(("path", [report["config"]["workload"].get("path") for report in reports]))
    table.append(("model", [report["config"]["workload"].get("model") for report in reports]))
    table.append(("created", [when(report) for report in reports]))
    rows = "".join(
        f"<tr><td>{key}</td>" + "".join(f"<td>{escape(_plain(v))}</td>" for v in values) + "</tr>"
        for key, values in table
    )
    return f'<div class="scroll"><table><tr><th></th>{head}</tr>{rows}</table></div>'


def comparison_table(reports: Sequence[dict[str, Any]], names: list[str]) -> str:
    """The `bench compare` figures, one column per run, ratios vs the first."""
    head = "".join(
        f'<th><span class="swatch" style="background:{run_color(i)}"></span>{escape(n)}</th>'
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


def when(report: dict[str, Any]) -> str:
    """``created`` as people read it: ``2026-01-01 12:00:00 UTC``."""
    created = str(report.get("created") or "")
    return created.replace("T", " ").replace("+00:00", " UTC")


def target(config: dict[str, Any]) -> str:
    """The URL the run loaded."""
    return f"{config['url']}{config['workload'].get('path', '')}"


def _key_values(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table."""
    cells = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def run_color(index: int) -> str:
    """The colour of the index-th run."""
    return PALETTE[index % len(PALETTE)]


def fixed(value: float, digits: int) -> str:
    """A number with thousands separated and ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def _compact(value: float) -> str:
    """Three significant digits below 10, one decimal above."""
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def percent(value: float | None) -> str:
    """A ratio as a percentage, or n/a."""
    return "n/a" if value is None else f"{value:.1%}"


def _plain(value: object) -> str:
    """A settings value as text; None is a dash."""
    return "—" if value is None else str(value)
