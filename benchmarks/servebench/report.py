"""Rows, alternating rounds, the ratios the project targets, the table and the JSON file.

Example::

    rows = alternate(3, {"a": measure_a, "b": measure_b})   # a, b, a, b, a, b... medians
    write_report(rows, ratios(rows_by_name, ...), path, settings)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .wrk import WrkResult


@dataclass
class Row:
    """One contender: its median rate over the rounds, and what else was measured."""

    name: str
    kind: str  # "served" (wrk over HTTP) or "in-process"
    rate: float = 0.0  # sentences (= requests) per second, median of the rounds
    per_cpu_s: float | None = None  # sentences per CPU-second of the server / this process
    rounds: list[float] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    quality: dict[str, float] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measure:
    """One round's figures."""

    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    per_cpu_s: float | None = None

    @classmethod
    def of(cls, result: WrkResult, cpu_s: float | None = None) -> Measure:
        return cls(
            result.rate,
            round(result.latency_ms["p50"], 2),
            round(result.latency_ms["p99"], 2),
            result.error_count,
            result.ok / cpu_s if cpu_s else None,
        )


def alternate(rounds: int, runs: dict[str, Callable[[], Measure]]) -> dict[str, list[Measure]]:
    """Each of *runs* once per round, in turn (the order rotates each round)."""
    names = list(runs)
    collected: dict[str, list[Measure]] = {name: [] for name in names}
    for turn in range(rounds):
        start = turn % len(names)
        for name in names[start:] + names[:start]:
            collected[name].append(runs[name]())
    return collected


def fill(row: Row, measures: list[Measure]) -> Row:
    """Put the median of *measures* (by rate) into *row*."""
    ordered = sorted(measures, key=lambda m: m.rate)
    middle = ordered[len(ordered) // 2]
    row.rate = round(statistics.median(m.rate for m in measures), 1)
    row.rounds = [round(m.rate, 1) for m in measures]
    row.p50_ms, row.p99_ms = middle.p50_ms, middle.p99_ms
    row.errors = sum(m.errors for m in measures)
    per_cpu = [m.per_cpu_s for m in measures if m.per_cpu_s is not None]
    row.per_cpu_s = round(statistics.median(per_cpu), 1) if per_cpu else None
    return row


def ratio(a: Row | None, b: Row | None, *, per_cpu: bool = False) -> float | None:
    """a / b by rate (or by sentences per CPU-second); None when either is missing."""
    if a is None or b is None:
        return None
    x, y = (a.per_cpu_s, b.per_cpu_s) if per_cpu else (a.rate, b.rate)
    if not x or not y or x <= 0 or y <= 0:
        return None
    return round(x / y, 3)


@dataclass(frozen=True)
class Target:
    """A figure the project aims at: ``value >= goal`` (``<=`` when *at_most*); no goal: shown."""

    value: float | None
    goal: float | None = None
    at_most: bool = False

    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        if self.goal is None:
            return ""
        met = self.value <= self.goal if self.at_most else self.value >= self.goal
        return "meets" if met else "misses"


def write_report(
    rows: list[Row], targets: dict[str, Target], output: Path, settings: dict[str, Any]
) -> None:
    """Write the JSON file and print the table and the target lines."""
    payload = {
        "benchmark": "serve",
        "settings": settings,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 1) for x in os.getloadavg()],
        },
        "rows": [asdict(row) for row in rows],
        "ratios": {
            name: {"value": t.value, "target": t.goal, "at_most": t.at_most, "verdict": t.verdict()}
            for name, t in targets.items()
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"redline serve benchmark: wrk, {settings['connections']} keep-alive connections, "
        f"{settings['seconds']} s windows after {settings['warmup']} s warm-up"
    )
    columns = ("contender", "kind", "sent/s", "rounds", "sent/CPU-s", "p50 ms", "p99 ms", "err")
    for column in (*columns, "mean cos", "min cos", "note"):
        table.add_column(column)
    for row in rows:
        quality = row.quality or {}
        table.add_row(
            row.name,
            row.kind,
            f"{row.rate:,.1f}",
            " ".join(f"{r:.0f}" for r in row.rounds),
            _show(row.per_cpu_s, 1),
            _show(row.p50_ms),
            _show(row.p99_ms),
            str(row.errors or ""),
            _show(quality.get("mean_cosine"), 6),
            _show(quality.get("min_cosine"), 6),
            row.note,
        )
    console = Console(width=190)
    console.print(table)
    for name, target in targets.items():
        sign = "<=" if target.at_most else ">="
        goal = "" if target.goal is None else f" (target {sign} {target.goal}) {target.verdict()}"
        console.print(f"{name}: {_show(target.value, 3) or 'n/a'}{goal}")
    for note in settings.get("notes", []):
        console.print(f"note: {note}")
    console.print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; wrote {output}")


def _show(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"
