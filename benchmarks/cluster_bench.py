"""Cluster benchmark: the cost of the nginx hop, scaling with replicas, and failover.

Scenarios (every request goes to 127.0.0.1 only):

* cached path — a small set of inputs, warmed first, so every request is a cache hit:
  one replica direct vs through nginx with 1, 2 and 3 replicas (HashingModel replicas);
* model path — the real all-MiniLM-L6-v2 with distinct inputs, 1 vs 2 replicas via nginx;
* failover — 3 replicas, one killed with SIGKILL a quarter of the way through the run.

Prints a rich table and writes ``benchmarks/results/cluster_bench.json``.
Run: ``python benchmarks/cluster_bench.py [--quick]`` (needs nginx; ``make bench-cluster``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np
from rich.console import Console
from rich.table import Table

from redline._ports import free_port
from redline.lb import (
    ClusterOptions,
    ClusterSupervisor,
    HealthCheck,
    Replica,
    ReplicaCommand,
    serve_command,
)

HASHING = "redline.serve.testing:create_hashing_model"
RESULTS = Path(__file__).resolve().parent / "results" / "cluster_bench.json"


@dataclass(frozen=True)
class Figures:
    scenario: str
    replicas: int
    via: str
    requests: int
    failures: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]


@dataclass(frozen=True)
class Run:
    done: int
    seconds: float
    latencies: list[float]
    errors: dict[str, int]


async def run_load(
    url: str,
    total: int,
    *,
    concurrency: int,
    body: Callable[[int], dict[str, object]],
    keepalive: bool = True,
    time_limit: float = 120.0,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
) -> Run:
    """POST up to *total* requests (stop at *time_limit*); never raises for a failed request."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=not keepalive)
    timeout = aiohttp.ClientTimeout(total=60)
    start = time.perf_counter()
    end = start + time_limit
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > end:
                    return
                began = time.perf_counter()
                try:
                    async with session.post(url, json=body(i)) as response:
                        await response.read()
                        if response.status != 200:
                            errors[f"HTTP {response.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - began)
                if on_progress is not None:
                    await on_progress(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(len(latencies), time.perf_counter() - start, latencies, dict(errors))


def figures(scenario: str, replicas: int, via: str, result: Run) -> Figures:
    done, seconds, latencies = result.done, result.seconds, result.latencies
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return Figures(
        scenario=scenario,
        replicas=replicas,
        via=via,
        requests=done,
        failures=sum(result.errors.values()),
        seconds=round(seconds, 3),
        rps=round(done / seconds, 1) if seconds else 0.0,
        p50_ms=round(float(np.percentile(ms, 50)), 2),
        p99_ms=round(float(np.percentile(ms, 99)), 2),
        errors=result.errors,
    )


def cluster_options(replicas: int, run_dir: Path, port: int) -> ClusterOptions:
    return ClusterOptions(
        replicas=replicas,
        listen=f"127.0.0.1:{port}",
        run_dir=run_dir,
        health=HealthCheck(interval=0.5, timeout=2.0, fall=2, rise=1),
        startup_timeout=180.0,
        drain_seconds=0.5,
        backoff_base=0.2,
    )


async def with_cluster(
    replicas: int,
    command: ReplicaCommand,
    work: Callable[[ClusterSupervisor, str], Awaitable[Figures]],
    tmp: Path,
) -> Figures:
    """Run *work* against a fresh supervised cluster (health checks running)."""
    port = free_port()
    supervisor = ClusterSupervisor(
        cluster_options(replicas, tmp / f"c{port}", port), command=command
    )
    async with supervisor:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.serve(stop))
        try:
            return await work(supervisor, f"http://127.0.0.1:{port}")
        finally:
            stop.set()
            await task


async def direct_replica(command: ReplicaCommand, tmp: Path) -> tuple[Replica, str]:
    replica = Replica(0, free_port(), command, log_dir=tmp / "direct-logs")
    replica.env["REDLINE_DATA_DIR"] = str(tmp / "direct-data")
    replica.start()
    async with aiohttp.ClientSession() as session:
        for _ in range(1200):
            try:
                async with session.get(replica.url + "/ready") as response:
                    if response.status == 200:
                        return replica, replica.url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    await replica.stop()
    raise RuntimeError("direct replica did not become ready")


async def main(args: argparse.Namespace) -> list[Figures]:
    quick = args.quick
    cached_n = 1500 if quick else 6000
    model_n = 150 if quick else 600
    failover_n = 2000 if quick else 6000
    concurrency = args.concurrency
    hot = [f"cached input {i}" for i in range(32)]

    def cached_body(i: int) -> dict[str, object]:
        return {"input": hot[i % len(hot)]}

    def distinct_body(i: int) -> dict[str, object]:
        return {"input": f"distinct sentence number {i} about {time.monotonic_ns()}"}

    hashing = serve_command(model=HASHING, cache_url="memory://")
    results: list[Figures] = []
    tmp = Path(tempfile.mkdtemp(prefix="redline-cluster-bench-"))

    async def cached(url: str) -> Run:
        # warm every replica's L1 (each hot input reaches each replica within a few rounds)
        await run_load(url + "/v1/embeddings", len(hot) * 6, concurrency=4, body=cached_body)
        return await run_load(
            url + "/v1/embeddings", cached_n, concurrency=concurrency, body=cached_body
        )

    if "cached" in args.scenarios:
        replica, url = await direct_replica(hashing, tmp)
        try:
            results.append(figures("cached", 1, "direct", await cached(url)))
        finally:
            await replica.stop()
        for n in (1, 2, 3):

            async def via_nginx(sup: ClusterSupervisor, url: str, n: int = n) -> Figures:
                return figures("cached", n, "nginx", await cached(url))

            results.append(await with_cluster(n, hashing, via_nginx, tmp))

    if "model" in args.scenarios:
        for n in (1, 2):
            # model workers x torch threads per replica, sized so replicas share the CPUs
            per_replica = max(1, (os.cpu_count() or 1) // n)
            workers = min(2, per_replica)
            threads = max(1, per_replica // workers)
            flags = ("--model-workers", str(workers), "--torch-threads", str(threads))
            real = serve_command(cache_url="none", extra_args=flags)

            async def model(sup: ClusterSupervisor, url: str, n: int = n) -> Figures:
                await run_load(url + "/v1/embeddings", 8, concurrency=2, body=distinct_body)
                got = await run_load(
                    url + "/v1/embeddings", model_n, concurrency=concurrency, body=distinct_body
                )
                return figures("model", n, "nginx", got)

            results.append(await with_cluster(n, real, model, tmp))

    if "failover" in args.scenarios:
        for keepalive in (False, True):

            async def failover(
                sup: ClusterSupervisor, url: str, keepalive: bool = keepalive
            ) -> Figures:
                victim = sup.replicas[1].pid
                if victim is None:
                    raise RuntimeError("replica 1 is not running")

                async def kill(i: int) -> None:
                    if i == failover_n // 4:
                        os.kill(victim, signal.SIGKILL)

                got = await run_load(
                    url + "/v1/embeddings",
                    failover_n,
                    concurrency=concurrency,
                    body=cached_body,
                    keepalive=keepalive,
                    on_progress=kill,
                )
                via = "nginx, kill -9" + (
                    ", client keepalive" if keepalive else ", new connections"
                )
                return figures("failover", 3, via, got)

            results.append(await with_cluster(3, hashing, failover, tmp))
    return results


def report(results: list[Figures], args: argparse.Namespace) -> None:
    table = Table(title=f"redline cluster benchmark (concurrency {args.concurrency})")
    for column in (
        "scenario",
        "replicas",
        "via",
        "requests",
        "failures",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
    ):
        table.add_column(column, justify="right" if column not in ("scenario", "via") else "left")
    for f in results:
        table.add_row(
            f.scenario,
            str(f.replicas),
            f.via,
            str(f.requests),
            str(f.failures),
            f"{f.rps:.0f}",
            f"{f.p50_ms:.2f}",
            f"{f.p99_ms:.2f}",
            ", ".join(f"{k}: {v}" for k, v in f.errors.items()) or "-",
        )
    Console(width=140).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "cluster",
        "quick": args.quick,
        "concurrency": args.concurrency,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "note": "shared 2-core box; client, nginx and replicas compete for the same CPUs",
        "results": [asdict(f) for f in results],
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    Console().print(f"wrote {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--scenarios",
        default="cached,model,failover",
        help="comma-separated subset of cached, model, failover",
    )
    arguments = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    report(asyncio.run(main(arguments)), arguments)
