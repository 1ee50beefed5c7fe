"""redline.bench: the load generator, its report, comparisons and canned scenarios.

``redline bench URL`` runs :func:`run_load` (closed loop with ``--concurrency``, open loop with
``--rate``; latencies in an HDR histogram), scrapes the server's ``/metrics`` before and
after, reads ``X-Cache`` and ``Server-Timing`` on every response, and prints / writes a
``redline.bench/1`` report (:mod:`redline.bench.report`), and with ``--html`` a
self-contained page (:mod:`redline.bench.html`). ``redline bench compare`` shows reports side
by side (``--html`` too); ``redline bench scenario`` runs the concurrency, cache and batching
experiments.

How much load one generator process makes: against a trivial endpoint (an asyncio server
answering a fixed 2-byte response) on the shared 2-core development box, one process
produced 2,500-4,100 req/s at concurrency 32 (about 4,000 when the box was quiet, using
~0.8 of a core), two processes 3,700-4,800 req/s (``benchmarks/bench_cli_throughput.py``).
Against a model server the generator is far from the limit; for the cached path on a bigger
box use ``--processes N`` (their HDR histograms merge exactly).

Example::

    from redline.bench import LoadConfig, Workload, run_load
    result = await run_load(LoadConfig(url="http://127.0.0.1:8000", requests=1000), Workload())
    result.histogram.summary().p99_ms
"""

from redline.bench.breakdown import Breakdown, compute_breakdown
from redline.bench.compare import compare_reports
from redline.bench.config import LoadConfig
from redline.bench.html import render_html, write_html
from redline.bench.loadgen import run_load
from redline.bench.metrics_scrape import parse_prometheus, parse_server_timing
from redline.bench.report import (
    SCHEMA,
    build_report,
    load_report,
    render_report,
    write_json,
    write_plot,
)
from redline.bench.result import LoadProgress, LoadResult
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
    "render_html",
    "render_report",
    "run_load",
    "write_html",
    "write_json",
    "write_plot",
]
