"""redline.bench: the load generator, its report, comparisons and canned scenarios.

Example::

    from redline.bench import LoadConfig, Workload, run_load
    result = await run_load(LoadConfig(url="http://127.0.0.1:8000", requests=1000), Workload())
    result.histogram.summary().p99_ms
"""

from redline.bench.breakdown import Breakdown, compute_breakdown
from redline.bench.compare import compare_reports
from redline.bench.loadgen import LoadConfig, LoadProgress, LoadResult, run_load
from redline.bench.metrics_scrape import parse_prometheus, parse_server_timing
from redline.bench.report import (
    SCHEMA,
    build_report,
    load_report,
    render_report,
    write_json,
    write_plot,
)
from redline.bench.runner import BenchRun, bench
from redline.bench.stats import LatencyHistogram, LatencySummary
from redline.bench.workload import Workload

__all__ = [
    "SCHEMA",
    "BenchRun",
    "Breakdown",
    "LatencyHistogram",
    "LatencySummary",
    "LoadConfig",
    "LoadProgress",
    "LoadResult",
    "Workload",
    "bench",
    "build_report",
    "compare_reports",
    "compute_breakdown",
    "load_report",
    "parse_prometheus",
    "parse_server_timing",
    "render_report",
    "run_load",
    "write_json",
    "write_plot",
]
