"""One complete ``redline bench`` run: scrape, load (1..N processes), scrape, report.

Ctrl-C (SIGINT) stops the load cleanly: in-flight requests get a short grace and the partial
report is still printed and written (``summary.interrupted`` is true). With ``processes > 1``
each worker process runs its share of the load (concurrency, requests and rate are split)
and their HDR histograms are merged losslessly.

Example::

    report = asyncio.run(bench(BenchRun(config=LoadConfig(url=url, requests=1000),
                                        workload=Workload())))
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console

from redline.bench.config import LoadConfig
from redline.bench.html import write_html
from redline.bench.loadgen import check_reachable, run_load
from redline.bench.metrics_scrape import (
    MetricsDelta,
    metrics_delta,
    metrics_url_for,
    scrape_metrics,
)
from redline.bench.progress import ProgressDisplay
from redline.bench.report import build_report, render_report, write_json, write_plot
from redline.bench.result import LoadProgress, LoadResult
from redline.bench.workload import Workload
from redline.exceptions import BenchError

__all__ = ["BenchRun", "bench", "execute", "split_config"]


@dataclass(frozen=True)
class BenchRun:
    """What ``redline bench URL …`` was asked to do."""

    config: LoadConfig
    workload: Workload
    processes: int = 1
    metrics_url: str | None = None
    scrape: bool = True
    label: str | None = None
    seed: int | None = None
    progress: bool = False


def split_config(config: LoadConfig, processes: int) -> list[LoadConfig]:
    """``config`` divided over ``processes`` workers (concurrency, requests and rate split)."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")

    def share(total: int, index: int) -> int:
        return total // processes + (1 if index < total % processes else 0)

    limit = config.in_flight_limit
    if config.requests is not None and config.requests < processes:
        raise BenchError(f"--requests ({config.requests}) must be >= --processes ({processes})")
    if limit < processes:
        raise BenchError(f"--concurrency ({limit}) must be >= --processes ({processes})")
    return [
        dataclasses.replace(
            config,
            concurrency=share(limit, index),
            requests=None if config.requests is None else share(config.requests, index),
            rate=None if config.rate is None else config.rate / processes,
        )
        for index in range(processes)
    ]


async def bench(
    run: BenchRun, *, stop: asyncio.Event | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Run the benchmark and return its report (see :mod:`redline.bench.report`)."""
    stop = stop if stop is not None else asyncio.Event()
    metrics_url = run.metrics_url or metrics_url_for(run.config.url)
    before: dict[Any, float] | None = None

    async def scrape_before() -> None:
        nonlocal before
        before = await _scrape(metrics_url)

    display = ProgressDisplay(console) if run.progress else None
    try:
        if run.processes == 1:
            result = await run_load(
                run.config,
                run.workload,
                stop=stop,
                on_progress=display.update if display else None,
                seed=run.seed,
                before_measuring=scrape_before if run.scrape else None,
            )
        else:
            # Worker processes warm up on their own: this scrape precedes their warm-up.
            if run.scrape:
                await scrape_before()
            result = await _run_processes(run, stop, display.update if display else None)
    finally:
        if display is not None:
            display.close()
    delta: MetricsDelta | None = None
    if before is not None:
        after = await _scrape(metrics_url)
        if after is not None:
            delta = metrics_delta(before, after)
    return build_report(
        run.config, run.workload, result, delta, label=run.label, processes=run.processes
    )


async def _scrape(url: str) -> dict[Any, float] | None:
    async with aiohttp.ClientSession() as session:
        return await scrape_metrics(session, url)


def execute(
    run: BenchRun,
    *,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    html_path: Path | None = None,
) -> None:
    """CLI body: run with a SIGINT handler, print the report, write JSON / plot / HTML if asked."""
    console = Console()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_sigint() -> None:
            if stop.is_set() and task is not None:
                task.cancel()  # a second Ctrl-C: stop waiting for the grace period
            stop.set()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await bench(run, stop=stop, console=Console(stderr=True))
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        report = asyncio.run(main())
    except asyncio.CancelledError:
        raise BenchError("interrupted twice; no report written") from None
    render_report(report, console)
    if json_path is not None:
        write_json(report, json_path)
    if plot_path is not None:
        write_plot(report, plot_path)
    if html_path is not None:
        write_html([report], html_path)


async def _run_processes(
    run: BenchRun, stop: asyncio.Event, on_progress: Callable[[LoadProgress], None] | None
) -> LoadResult:
    """Run the load in ``run.processes`` spawned workers and merge their results."""
    await check_reachable(run.config.url)
    context = multiprocessing.get_context("spawn")
    channel: Any = context.Queue()
    workers = [
        context.Process(
            target=_worker_main,
            args=(
                index,
                config,
                run.workload,
                None if run.seed is None else run.seed + index,
                channel,
            ),
            daemon=True,
        )
        for index, config in enumerate(split_config(run.config, run.processes))
    ]
    for worker in workers:
        worker.start()
    results: dict[int, LoadResult] = {}
    progress: dict[int, LoadProgress] = {}
    forwarded = False
    try:
        while len(results) < len(workers):
            if stop.is_set() and not forwarded:
                forwarded = True
                for worker in workers:
                    if worker.pid is not None and worker.is_alive():
                        os.kill(worker.pid, signal.SIGINT)
            try:
                index, kind, payload = channel.get_nowait()
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and channel.empty():
                    raise BenchError("a load generator process exited without a result") from None
                await asyncio.sleep(0.05)
                continue
            if kind == "result":
                results[index] = payload
            elif kind == "error":
                raise BenchError(payload)
            elif on_progress is not None:
                progress[index] = payload
                on_progress(_merge_progress(list(progress.values())))
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    merged = results[0]
    merged.model = next((r.model for r in results.values() if r.model), None)
    for index in range(1, len(workers)):
        merged.merge(results[index])
    return merged


def _merge_progress(items: list[LoadProgress]) -> LoadProgress:
    fractions = [item.fraction for item in items if item.fraction is not None]
    return LoadProgress(
        elapsed_s=max(item.elapsed_s for item in items),
        completed=sum(item.completed for item in items),
        errors=sum(item.errors for item in items),
        recent_rps=sum(item.recent_rps for item in items),
        recent_p99_ms=max(item.recent_p99_ms for item in items),
        fraction=min(fractions) if fractions else None,
    )


def _worker_main(
    index: int, config: LoadConfig, workload: Workload, seed: int | None, channel: Any
) -> None:
    """Entry point of one spawned generator process."""
    last = [0.0]

    def report_progress(snapshot: LoadProgress) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25:
            last[0] = now
            channel.put((index, "progress", snapshot))

    async def main() -> LoadResult:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        return await run_load(config, workload, stop=stop, on_progress=report_progress, seed=seed)

    try:
        channel.put((index, "result", asyncio.run(main())))
    except BenchError as exc:
        channel.put((index, "error", str(exc)))
