"""``redline bench scenario concurrency|cache|batching``: canned experiments with one table each.

* ``concurrency`` — 100 tasks of 100 ms run serially, all at once, and with
  ``gather_limited(limit=10)``: ideal vs measured seconds and the overhead.
* ``cache`` — a ``redline serve`` subprocess with the cache off, then on, loaded at 0 %,
  50 % and 90 % repeated inputs: req/s, p50, p99 and hit ratio.
* ``batching`` — the server with the micro-batcher off (``--max-batch-size 1``) and on, at
  concurrency 1, 8 and 64.

Example::

    result = run_scenario("concurrency")
    render_scenario(result, Console())
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from redline.bench.breakdown import compute_breakdown
from redline.bench.config import LoadConfig
from redline.bench.loadgen import run_load
from redline.bench.server_process import ServerProcess
from redline.bench.workload import Workload
from redline.exceptions import BenchError

__all__ = [
    "SCENARIOS",
    "batching_scenario",
    "cache_scenario",
    "concurrency_scenario",
    "render_scenario",
    "run_scenario",
    "write_scenario",
]

#: The scenario names ``redline bench scenario`` accepts.
SCENARIOS: tuple[str, ...] = ("concurrency", "cache", "batching")

_SCHEMA = "redline.bench.scenario/1"


async def concurrency_scenario(
    tasks: int = 100,
    task_seconds: float = 0.1,
    limit: int = 10,
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Serial vs unbounded ``gather`` vs ``gather_limited``: ideal vs measured seconds.

    Example::

        result = await concurrency_scenario(tasks=20, task_seconds=0.05, limit=5)
    """
    from redline.concurrency import gather_limited

    if tasks < 1 or limit < 1 or task_seconds <= 0:
        raise ValueError(
            "tasks and limit must be >= 1 and task_seconds > 0, "
            f"got {tasks}, {limit}, {task_seconds}"
        )

    async def task(index: int) -> int:
        await asyncio.sleep(task_seconds)
        return index

    async def serial() -> list[int]:
        return [await task(index) for index in range(tasks)]

    async def unbounded() -> list[int]:
        return list(await asyncio.gather(*(task(index) for index in range(tasks))))

    async def limited() -> list[int]:
        return list(await gather_limited((task(index) for index in range(tasks)), limit=limit))

    cases: list[tuple[str, float, Callable[[], Coroutine[Any, Any, list[int]]]]] = [
        ("serial", tasks * task_seconds, serial),
        ("gather (no limit)", task_seconds, unbounded),
        (f"gather_limited(limit={limit})", math.ceil(tasks / limit) * task_seconds, limited),
    ]
    rows = []
    for name, ideal, run in cases:
        start = timer()
        results = await run()
        measured = timer() - start
        if results != list(range(tasks)):
            raise BenchError(f"{name} returned results out of order")
        rows.append([name, ideal, measured, (measured - ideal) / ideal * 100.0])
    return {
        "schema": _SCHEMA,
        "scenario": "concurrency",
        "params": {"tasks": tasks, "task_seconds": task_seconds, "limit": limit},
        "columns": ["strategy", "ideal_s", "measured_s", "overhead_pct"],
        "key_columns": 1,
        "plot_column": "measured_s",
        "rows": rows,
    }


_CELL_COLUMNS = ("rps", "p50_ms", "p99_ms", "hit_ratio", "bottleneck", "errors", "error_kinds")


async def _load_cell(url: str, concurrency: int, duration: float, repeat: float) -> dict[str, Any]:
    """One closed-loop measurement against a running server."""
    warmup = min(0.5, duration / 2)
    config = LoadConfig(url=url, concurrency=concurrency, duration=duration, warmup=warmup)
    result = await run_load(config, Workload(repeat=repeat, hot_set_size=8))
    summary = result.histogram.summary()
    looked_up = result.cache["hit"] + result.cache["miss"] + result.cache["partial"]
    kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(result.errors.items()))
    return {
        "rps": result.throughput,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "hit_ratio": result.cache["hit"] / looked_up if looked_up else 0.0,
        "bottleneck": compute_breakdown(result).bottleneck or "n/a",
        "errors": sum(result.errors.values()),
        "error_kinds": kinds,
    }


async def cache_scenario(model: str | None = None, duration: float = 5.0) -> dict[str, Any]:
    """The server with the cache off vs on, at 0 %, 50 % and 90 % repeated inputs."""
    columns = ["cache", "repeat", *_CELL_COLUMNS]
    rows = []
    for cache_url, label in (("none", "off"), ("memory://", "on")):
        async with ServerProcess(model=model, cache_url=cache_url) as server:
            for repeat in (0.0, 0.5, 0.9):
                cell = await _load_cell(server.url, 8, duration, repeat)
                rows.append([label, repeat, *(cell[name] for name in _CELL_COLUMNS)])
    return {
        "schema": _SCHEMA,
        "scenario": "cache",
        "params": {"model": model, "duration_s": duration, "concurrency": 8},
        "columns": columns,
        "key_columns": 2,
        "plot_column": "rps",
        "rows": rows,
    }


async def batching_scenario(model: str | None = None, duration: float = 5.0) -> dict[str, Any]:
    """The server with the micro-batcher off (batch size 1) vs on, at concurrency 1, 8, 64."""
    names = [name for name in _CELL_COLUMNS if name != "hit_ratio"]
    rows = []
    for max_batch_size, label in ((1, "off"), (None, "on")):
        async with ServerProcess(
            model=model, cache_url="none", max_batch_size=max_batch_size
        ) as server:
            for concurrency in (1, 8, 64):
                cell = await _load_cell(server.url, concurrency, duration, 0.0)
                rows.append([label, concurrency, *(cell[name] for name in names)])
    return {
        "schema": _SCHEMA,
        "scenario": "batching",
        "params": {"model": model, "duration_s": duration},
        "columns": ["batcher", "concurrency", *names],
        "key_columns": 2,
        "plot_column": "rps",
        "rows": rows,
    }


def run_scenario(name: str, *, model: str | None = None, duration: float = 5.0) -> dict[str, Any]:
    """Run the named scenario to completion (blocking) and return its result."""
    if name == "concurrency":
        return asyncio.run(concurrency_scenario())
    if name == "cache":
        return asyncio.run(cache_scenario(model, duration))
    if name == "batching":
        return asyncio.run(batching_scenario(model, duration))
    raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def render_scenario(result: dict[str, Any], console: Console) -> None:
    """Print a scenario result as a table."""
    params = ", ".join(f"{key}={value}" for key, value in result["params"].items())
    table = Table(title=f"redline bench scenario {result['scenario']} ({params})")
    for column in result["columns"]:
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(*(_cell(value) for value in row))
    console.print(table)


def write_scenario(
    result: dict[str, Any], *, json_path: Path | None = None, plot_path: Path | None = None
) -> None:
    """Write the result as JSON and/or a PNG bar chart of its ``plot_column``."""
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if plot_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = result["columns"]
    numeric = columns.index(result["plot_column"])
    labels = [" ".join(_cell(v) for v in row[: result["key_columns"]]) for row in result["rows"]]
    figure, axes = plt.subplots(figsize=(10, 4.5))
    try:
        axes.bar(labels, [row[numeric] for row in result["rows"]], color="tab:blue")
        axes.set_ylabel(columns[numeric])
        axes.set_title(f"scenario {result['scenario']}")
        axes.tick_params(axis="x", labelrotation=20)
        figure.tight_layout()
        figure.savefig(plot_path, format="png", dpi=100)
    finally:
        plt.close(figure)
