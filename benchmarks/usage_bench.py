"""Benchmark of usage accounting: what the durable Redis stream costs a request.

It starts its own redis-server on a free loopback port (and stops it), then runs
``redline serve`` (the HashingModel, so the model costs nearly nothing and the usage path
shows; a Redis cache) twice per round, alternating, one load at a time:

* ``memory``: ``REDLINE_USAGE_QUEUE=memory``, the in-process queue (a crash loses what waits);
* ``redis``: ``REDLINE_USAGE_QUEUE=redis``, each response waits for its row's ``XADD``.

Each run: a closed loop of ``--concurrency`` keep-alive clients for ``--duration`` seconds
after a warm-up, every input distinct (cache misses), so every request writes a usage row.
Prints a table (medians over the rounds) and writes ``benchmarks/results/usage_bench.json``
with the ratios redis / memory side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from redline._services import RedisServer, free_port, stop_process, wait_for_port
from redline.bench.config import LoadConfig
from redline.bench.loadgen import run_load
from redline.bench.workload import Workload

REPO = Path(__file__).resolve().parents[1]

DEFAULT_JSON = REPO / "benchmarks" / "results" / "usage_bench.json"
MODES = ("memory", "redis")


def serve(port: int, data_dir: Path, redis_url: str, mode: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "REDLINE_DATA_DIR": str(data_dir),
        "REDLINE_CACHE_URL": redis_url,
        "REDLINE_USAGE_QUEUE": mode,
        "REDLINE_LOG_LEVEL": "warning",
    }
    command = [
        *(sys.executable, "-m", "redline", "serve", "--port", str(port)),
        *("--model", "redline.serve.testing:create_hashing_model"),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def one_run(redis_url: str, mode: str, concurrency: int, duration: float) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="usage-bench-") as data:
        proc = serve(port, Path(data), redis_url, mode)
        try:
            wait_for_port(port, timeout=60, proc=proc)
            await asyncio.sleep(1.0)  # the HashingModel is ready at once; let the loop settle
            config = LoadConfig(
                url=f"http://127.0.0.1:{port}",
                concurrency=concurrency,
                duration=duration,
                warmup=1.0,
            )
            result = await run_load(config, Workload(repeat=0.0), seed=len(mode))
        finally:
            stop_process(proc, timeout=30)
    summary = result.histogram.summary()
    return {
        "rps": result.throughput,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "ok": result.ok,
        "errors": sum(result.errors.values()),
    }


async def run(rounds: int, concurrency: int, duration: float) -> dict[str, Any]:
    server = RedisServer().start()
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        for index in range(rounds):
            order = MODES if index % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                runs[mode].append(await one_run(server.url, mode, concurrency, duration))
    finally:
        server.stop()
    medians = {
        mode: {
            key: statistics.median(run[key] for run in runs[mode])
            for key in ("rps", "p50_ms", "p99_ms")
        }
        for mode in MODES
    }
    ratios = {
        key: round(medians["redis"][key] / medians["memory"][key], 3)
        for key in ("rps", "p50_ms", "p99_ms")
    }
    return {
        "medians": medians,
        "ratios_redis_over_memory": ratios,
        "runs": runs,
        "settings": {
            "rounds": rounds,
            "concurrency": concurrency,
            "duration_s": duration,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "model": "redline.serve.testing:create_hashing_model",
        },
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="usage queue: median over rounds")
    for column in ("queue", "req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for mode, row in result["medians"].items():
        table.add_row(mode, f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}")
    ratios = result["ratios_redis_over_memory"]
    table.add_row(
        "redis / memory", f"{ratios['rps']}x", f"{ratios['p50_ms']}x", f"{ratios['p99_ms']}x"
    )
    Console(width=100).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    rounds, duration = (2, 3.0) if args.quick else (args.rounds, args.duration)
    result = asyncio.run(run(rounds, args.concurrency, duration))
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
