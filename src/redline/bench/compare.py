"""``redline bench compare``: several JSON reports side by side, with ratios vs the first.

Example::

    table = compare_reports([load_report("before.json"), load_report("after.json")])
    Console().print(table)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

__all__ = ["COMPARED_METRICS", "compare_reports", "comparison_rows"]

Getter = Callable[[dict[str, Any]], float | None]

#: (row label, unit, how to read it from a report, True if higher is better).
COMPARED_METRICS: tuple[tuple[str, str, Getter, bool], ...] = (
    ("throughput", "req/s", lambda r: r["summary"]["throughput_rps"], True),
    ("p50", "ms", lambda r: r["latency_ms"]["p50"], False),
    ("p90", "ms", lambda r: r["latency_ms"]["p90"], False),
    ("p99", "ms", lambda r: r["latency_ms"]["p99"], False),
    ("p99.9", "ms", lambda r: r["latency_ms"]["p99.9"], False),
    ("max", "ms", lambda r: r["latency_ms"]["max"], False),
    ("error ratio", "", lambda r: r["summary"]["error_ratio"], False),
    ("cache hit ratio", "", lambda r: r["cache"]["hit_ratio"], True),
)


def report_name(report: dict[str, Any], index: int) -> str:
    """A column title: the report's label, else its position."""
    label = report.get("label")
    return str(label) if label else f"#{index + 1}"


def comparison_rows(
    reports: Sequence[dict[str, Any]],
) -> list[tuple[str, list[float | None], list[float | None]]]:
    """(metric, values per report, ratio vs the first report per report) for every metric."""
    if len(reports) < 2:
        raise ValueError(f"compare needs at least 2 reports, got {len(reports)}")
    rows = []
    for label, unit, getter, _higher_is_better in COMPARED_METRICS:
        values = [getter(report) for report in reports]
        base = values[0]
        ratios: list[float | None] = [
            None if value is None or not base else value / base for value in values
        ]
        title = f"{label} ({unit})" if unit else label
        rows.append((title, values, ratios))
    return rows


def compare_reports(reports: Sequence[dict[str, Any]]) -> Table:
    """A rich table: one column per report, each value followed by its ratio vs the first."""
    table = Table(title="redline bench compare (ratio vs the first report)")
    table.add_column("metric")
    for index, report in enumerate(reports):
        table.add_column(report_name(report, index), justify="right")
    rows = comparison_rows(reports)
    for (title, values, ratios), metric in zip(rows, COMPARED_METRICS, strict=True):
        higher_is_better = metric[3]
        cells = []
        for index, (value, ratio) in enumerate(zip(values, ratios, strict=True)):
            if value is None:
                cells.append("n/a")
            elif index == 0 or ratio is None:
                cells.append(f"{value:,.3g}" if value < 10 else f"{value:,.1f}")
            else:
                shown = f"{value:,.3g}" if value < 10 else f"{value:,.1f}"
                better = ratio > 1 if higher_is_better else ratio < 1
                color = "green" if better else "red" if ratio != 1 else "white"
                cells.append(f"{shown} [{color}]({ratio:.2f}x)[/]")
        table.add_row(title, *cells)
    return table
