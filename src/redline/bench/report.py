"""The benchmark report: one versioned JSON document, a rich table, and a PNG plot.

Schema ``redline.bench/1`` (every key always present)::

    {
      "schema": "redline.bench/1",
      "created": "2026-01-01T00:00:00+00:00",       # UTC, ISO 8601
      "label": str | null,                           # --label, shown by `bench compare`
      "config": {"url", "mode": "closed"|"open", "concurrency", "requests", "duration_s",
                 "rate", "warmup_s", "timeout_s", "processes", "workload": {...}},
      "summary": {"requests", "ok", "errors", "error_ratio", "elapsed_s", "throughput_rps",
                  "interrupted", "warmup_requests", "late_sends", "max_send_lag_ms"},
      "latency_ms": {"count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"},
      "latency_distribution": [[percentile, ms], ...],   # HDR percentile curve, 0 .. 99.999
      "errors": {"by_kind": {"HTTP 500": n, "timeout": n, ...}, "by_status": {"200": n, ...}},
      "cache": {"hit", "miss", "partial", "none", "hit_ratio": float | null,   # from X-Cache
                "tiers": {"memory": {"hit", "miss", "hit_ratio"}, ...}},   # from /metrics
      "breakdown": {"source": "server-timing"|"metrics"|null, "client_mean_ms",
                    "server_total_ms", "stages_ms": {...}, "shares": {...}, "bottleneck"},
      "server_metrics": {"histograms": {...}, "counters": {...}} | null,
      "timeline": [{"t", "seconds", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms",
                    "max_ms"}, ...]
    }

A timeline row is the bucket starting ``t`` seconds into the measured phase. Buckets are as
wide as :func:`timeline_bucket_s` says for the run's length (0.1 s for a run of up to 3 s,
1 s up to 30 s, 10 s up to 5 minutes: at most 30 rows); ``seconds`` is how much of the
bucket the run covered (the width, less only for the last one) and ``rps`` is
``requests / seconds``. Buckets with nothing completed are rows with zero requests.
Reports written before ``seconds``, ``p90_ms`` and ``max_ms`` existed (one-second buckets)
still load: readers take a missing ``seconds`` as 1.

Latencies are of successful responses only; errors are counted by kind and by status.

Example::

    report = build_report(config, workload, result, delta)
    write_json(report, "run.json"); render_report(report, Console()); write_plot(report, "run.png")
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from redline.bench.breakdown import compute_breakdown
from redline.bench.config import LoadConfig
from redline.bench.metrics_scrape import MetricsDelta
from redline.bench.result import TIMELINE_SLOT_S, LoadResult
from redline.bench.workload import Workload
from redline.exceptions import BenchError

__all__ = ["SCHEMA", "build_report", "load_report", "render_report", "write_json", "write_plot"]

#: The schema tag of every JSON report this version writes.
SCHEMA = "redline.bench/1"

_BUCKET_WIDTHS_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_MAX_BUCKETS = 30


def build_report(
    config: LoadConfig,
    workload: Workload,
    result: LoadResult,
    delta: MetricsDelta | None = None,
    *,
    label: str | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """The JSON-ready report of one run (see the module docstring for the schema)."""
    latency = result.histogram.summary()
    errors = sum(result.errors.values())
    looked_up = result.cache["hit"] + result.cache["miss"] + result.cache["partial"]
    return {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": label,
        "config": {
            **config.describe(),
            "processes": processes,
            "workload": {**workload.describe(), "model": result.model or workload.model},
        },
        "summary": {
            "requests": result.completed,
            "ok": result.ok,
            "errors": errors,
            "error_ratio": errors / result.completed if result.completed else 0.0,
            "elapsed_s": result.elapsed_s,
            "throughput_rps": result.throughput,
            "interrupted": result.interrupted,
            "warmup_requests": result.warmup_completed,
            "late_sends": result.late_sends,
            "max_send_lag_ms": result.max_send_lag_ms,
        },
        "latency_ms": {
            "count": latency.count,
            "min": latency.min_ms,
            "mean": latency.mean_ms,
            "p50": latency.p50_ms,
            "p90": latency.p90_ms,
            "p99": latency.p99_ms,
            "p99.9": latency.p999_ms,
            "max": latency.max_ms,
        },
        "latency_distribution": [
            [percentile, ms] for percentile, ms in result.histogram.distribution(60)
        ],
        "errors": {
            "by_kind": dict(sorted(result.errors.items())),
            "by_status": {str(code): n for code, n in sorted(result.statuses.items())},
        },
        "cache": {
            "hit": result.cache["hit"],
            "miss": result.cache["miss"],
            "partial": result.cache["partial"],
            "none": result.cache["none"],
            "hit_ratio": result.cache["hit"] / looked_up if looked_up else None,
            "tiers": {} if delta is None else _cache_tiers(delta),
        },
        "breakdown": compute_breakdown(result, delta).as_dict(),
        "server_metrics": None
        if delta is None
        else {"histograms": delta.histograms(), "counters": delta.counters()},
        "timeline": _timeline(result),
    }


def _cache_tiers(delta: MetricsDelta) -> dict[str, dict[str, float | None]]:
    """Hits and misses per cache tier from ``redline_cache_requests_total{tier,result}``."""
    tiers: dict[str, dict[str, float | None]] = {}
    for (name, labels), value in delta.samples.items():
        label = dict(labels)
        if name != "redline_cache_requests_total" or "tier" not in label:
            continue
        tier = tiers.setdefault(label["tier"], {"hit": 0.0, "miss": 0.0, "hit_ratio": None})
        result = label.get("result", "")
        if result in ("hit", "miss"):
            tier[result] = (tier[result] or 0.0) + value
    for tier in tiers.values():
        looked_up = (tier["hit"] or 0.0) + (tier["miss"] or 0.0)
        tier["hit_ratio"] = (tier["hit"] or 0.0) / looked_up if looked_up else None
    return dict(sorted(tiers.items()))


def timeline_bucket_s(elapsed_s: float) -> float:
    """The timeline's bucket width for a run this long: at most 30 buckets, round widths."""
    return next(
        (width for width in _BUCKET_WIDTHS_S if elapsed_s <= width * _MAX_BUCKETS),
        _BUCKET_WIDTHS_S[-1],
    )


def _timeline(result: LoadResult) -> list[dict[str, Any]]:
    """Request counts, rates and latency percentiles per bucket, empty buckets included."""
    slots = set(result.timeline) | set(result.timeline_errors)
    if not slots:
        return []
    width = timeline_bucket_s(result.elapsed_s)
    per_bucket = round(width / TIMELINE_SLOT_S)
    rows = []
    for bucket in range(max(slots) // per_bucket + 1):
        members = range(bucket * per_bucket, (bucket + 1) * per_bucket)
        chunks = [
            np.frombuffer(result.timeline[s], dtype=np.float64)
            for s in members
            if s in result.timeline
        ]
        values = np.concatenate(chunks) if chunks else np.empty(0)
        errors = sum(result.timeline_errors[s] for s in members)
        requests = int(values.size) + errors
        start = round(bucket * width, 6)
        # The last bucket is partial: a count over part of the width is not a full rate.
        covered = min(width, result.elapsed_s - start)
        covered = covered if covered > 0 else width
        rows.append(
            {
                "t": start,
                "seconds": covered,
                "requests": requests,
                "errors": errors,
                "rps": requests / covered,
                "p50_ms": _percentile(values, 50),
                "p90_ms": _percentile(values, 90),
                "p99_ms": _percentile(values, 99),
                "max_ms": float(values.max()) if values.size else None,
            }
        )
    return rows


def _percentile(values: np.ndarray[Any, Any], percentile: float) -> float | None:
    return float(np.percentile(values, percentile)) if values.size else None


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write ``report`` as indented JSON."""
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a JSON report; :class:`BenchError` if unreadable or not ``redline.bench/1``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(f"cannot read report {str(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BenchError(f"report {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise BenchError(f"report {str(path)!r} has schema {found!r}, expected {SCHEMA!r}")
    return data


def render_report(report: dict[str, Any], console: Console) -> None:
    """Print the report as rich tables: summary, latency, errors, cache, breakdown."""
    config, summary, latency = report["config"], report["summary"], report["latency_ms"]
    title = f"redline bench {config['mode']} loop — {config['url']}{config['workload']['path']}"
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{summary['requests']:,} ({summary['errors']:,} errors)")
    table.add_row("elapsed", f"{summary['elapsed_s']:.2f} s")
    table.add_row("throughput", f"{summary['throughput_rps']:,.1f} req/s")
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        table.add_row(f"latency {key}", f"{latency[key]:.2f} ms")
    if config["mode"] == "open":
        table.add_row(
            "late sends", f"{summary['late_sends']:,} (max lag {summary['max_send_lag_ms']:.1f} ms)"
        )
    hit_ratio = report["cache"]["hit_ratio"]
    table.add_row("cache hit ratio", "n/a" if hit_ratio is None else f"{hit_ratio:.1%}")
    for tier, counts in report["cache"]["tiers"].items():
        if counts["hit_ratio"] is not None:
            table.add_row(f"  {tier} tier (server)", f"{counts['hit_ratio']:.1%}")
    for kind, count in report["errors"]["by_kind"].items():
        table.add_row(f"error: {kind}", f"{count:,}")
    if summary["interrupted"]:
        table.add_row("[yellow]interrupted[/]", "partial report")
    console.print(table)
    breakdown = report["breakdown"]
    if breakdown["source"] is None:
        console.print("server-side breakdown: n/a (no Server-Timing header, no redline /metrics)")
        return
    stages = Table(title=f"where the time went (from {breakdown['source']})")
    stages.add_column("stage")
    stages.add_column("mean ms", justify="right")
    stages.add_column("share", justify="right")
    for name, value in breakdown["stages_ms"].items():
        marker = " ◀ bottleneck" if name == breakdown["bottleneck"] else ""
        stages.add_row(f"{name}{marker}", f"{value:.2f}", f"{breakdown['shares'][name]:.0%}")
    console.print(stages)
    console.print(f"bottleneck: [bold]{breakdown['bottleneck']}[/]")


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Write a PNG: latency over time (p50/p99 per second) and the latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = [row for row in report["timeline"] if row["p50_ms"] is not None]
    figure, (over_time, distribution) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        over_time.plot([r["t"] for r in timeline], [r["p50_ms"] for r in timeline], label="p50")
        over_time.plot([r["t"] for r in timeline], [r["p99_ms"] for r in timeline], label="p99")
        over_time.set_xlabel("time (s)")
        over_time.set_ylabel("latency (ms)")
        over_time.set_title("latency over time")
        over_time.legend()
        curve = report["latency_distribution"]
        # x = 1 / (1 - percentile): each tick one more "nine", the usual HDR picture.
        xs = [1.0 / (1.0 - min(p, 99.999) / 100.0) for p, _ms in curve]
        distribution.plot(xs, [ms for _p, ms in curve], color="tab:orange")
        distribution.set_xscale("log")
        ticks = [2.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]
        distribution.set_xticks(ticks, ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        distribution.set_xlabel("percentile")
        distribution.set_ylabel("latency (ms)")
        distribution.set_title(
            f"latency distribution ({report['summary']['throughput_rps']:,.0f} req/s)"
        )
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100)
    finally:
        plt.close(figure)
