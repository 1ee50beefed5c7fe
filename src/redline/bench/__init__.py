"""redline.bench: the load generator, its report, comparisons and canned scenarios.

``redline bench URL`` runs :func:`run_load` (closed loop with ``--concurrency``, open loop with
``--rate``; latencies in an HDR histogram), scrapes the server's ``/metrics`` before and
after, reads ``X-Cache`` and ``Server-Timing`` on every response, and prints / writes a
``redline.bench/1`` report (:mod:`redline.bench.report`), and with ``--html`` a
self-contained page (:mod:`redline.bench.html`). ``redline bench compare`` shows reports side
by side (``--html`` too); ``redline bench scenario`` runs the concurrency, cache and batching
experiments.

One generator process is far from the limit against a model server; where it is not (a
cached path on a bigger box) use ``--processes N``: their HDR histograms merge exactly.
``benchmarks/bench_cli_throughput.py`` measures how much load one and two processes make.

Example::

    from redline.bench import LoadConfig, Workload, run_load
    result = await run_load(LoadConfig(url="http://127.0.0.1:8000", requests=1000), Workload())
    result.histogram.summary().p99_ms
"""

import typing

from redline._lazy import lazy_exports as _lazy_exports

# Imported on first use (redline._lazy): ``redline serve`` starts without aiohttp / httpx.
if typing.TYPE_CHECKING:
    from redline.bench.breakdown import Breakdown as Breakdown
    from redline.bench.breakdown import compute_breakdown as compute_breakdown
    from redline.bench.compare import compare_reports as compare_reports
    from redline.bench.config import LoadConfig as LoadConfig
    from redline.bench.html import render_html as render_html
    from redline.bench.html import write_html as write_html
    from redline.bench.loadgen import run_load as run_load
    from redline.bench.metrics_scrape import parse_prometheus as parse_prometheus
    from redline.bench.metrics_scrape import parse_server_timing as parse_server_timing
    from redline.bench.report import SCHEMA as SCHEMA
    from redline.bench.report import build_report as build_report
    from redline.bench.report import load_report as load_report
    from redline.bench.report import render_report as render_report
    from redline.bench.report import write_json as write_json
    from redline.bench.report import write_plot as write_plot
    from redline.bench.result import LoadProgress as LoadProgress
    from redline.bench.result import LoadResult as LoadResult
    from redline.bench.runner import BenchRun as BenchRun
    from redline.bench.runner import bench as bench
    from redline.bench.stats import LatencyHistogram as LatencyHistogram
    from redline.bench.stats import LatencySummary as LatencySummary
    from redline.bench.workload import Workload as Workload

__all__, __getattr__, __dir__ = _lazy_exports(__name__)
