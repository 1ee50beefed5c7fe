"""Cluster events benchmark: failures and p99 while a replica dies, restarts, or is added.

32 keep-alive clients (one httpx pool, each connection reused, no client retries) POST
``/v1/embeddings`` without pause to a 3-replica cluster of HashingModel replicas behind real
nginx. Each scenario runs a steady phase, then an event, then a short tail; the table puts the
p99 of requests *started during the event* beside the steady-phase p99:

* kill — SIGKILL one replica; the event lasts until it is back up and nginx has had
  ``fail_timeout`` to take it back;
* roll — rolling restart of all 3 replicas;
* scale — 3 -> 4 -> 3 replicas within the spare slots (no nginx reload);
* reload — five plain ``nginx -s reload`` one second apart: what a membership change past the
  slots costs keep-alive clients (nginx closes their idle connections).

Prints a rich table and writes ``benchmarks/results/cluster_events_bench.json``.
Run: ``python benchmarks/cluster_events_bench.py [--quick] [--scenarios kill,roll]``.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from redline._ports import free_port
from redline.lb import ClusterOptions, ClusterSupervisor, HealthCheck, ReplicaState, serve_command

HASHING = "redline.serve.testing:create_hashing_model"
RESULTS = Path(__file__).resolve().parent / "results" / "cluster_events_bench.json"


@dataclass(frozen=True)
class Figures:
    scenario: str
    requests: int
    failures: int
    steady_p99_ms: float
    event_p99_ms: float
    p99_ratio: float
    event_requests: int
    event_seconds: float
    reloads: int
    errors: dict[str, int]


@dataclass
class Recorder:
    """Every request's start time, latency and outcome."""

    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def p99_ms(self, begin: float, end: float) -> tuple[float, int]:
        """p99 (ms) and count of the requests started in [begin, end)."""
        starts, latencies = np.array(self.starts), np.array(self.latencies)
        chosen = latencies[(starts >= begin) & (starts < end)]
        if chosen.size == 0:
            return 0.0, 0
        return float(np.percentile(chosen, 99) * 1000), int(chosen.size)


async def keepalive_load(url: str, concurrency: int, stop: asyncio.Event) -> Recorder:
    """POST until *stop* is set, each worker reusing a pooled keep-alive connection."""
    record = Recorder()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0, limits=limits) as client:

        async def worker(w: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                began = time.perf_counter()
                try:
                    response = await client.post(url, json={"input": f"w{w} r{i % 64}"})
                    if response.status_code != 200:
                        record.errors[f"HTTP {response.status_code}"] += 1
                except httpx.HTTPError as exc:
                    record.errors[type(exc).__name__] += 1
                record.starts.append(began)
                record.latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return record


async def wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError("event did not finish in time")
        await asyncio.sleep(0.05)


async def kill(sup: ClusterSupervisor) -> None:
    victim = sup.replicas[1]
    pid, restarts = victim.pid, victim.restarts
    if pid is None:
        raise RuntimeError("replica 1 is not running")
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: victim.restarts > restarts and victim.state is ReplicaState.UP)
    await asyncio.sleep(sup.options.fail_timeout + 1.0)  # nginx takes it back


async def roll(sup: ClusterSupervisor) -> None:
    await sup.rolling_restart()


async def scale(sup: ClusterSupervisor) -> None:
    await sup.scale(4)
    await asyncio.sleep(1.0)
    await sup.scale(3)


async def reload(sup: ClusterSupervisor) -> None:
    assert sup.nginx is not None
    for _ in range(5):
        await sup.nginx.reload()
        await asyncio.sleep(1.0)


EVENTS: dict[str, Callable[[ClusterSupervisor], Awaitable[None]]] = {
    "kill": kill,
    "roll": roll,
    "scale": scale,
    "reload": reload,
}


async def run_scenario(name: str, args: argparse.Namespace, tmp: Path) -> Figures:
    port = free_port()
    options = ClusterOptions(
        replicas=3,
        max_replicas=4,
        listen=f"127.0.0.1:{port}",
        run_dir=tmp / name,
        health=HealthCheck(interval=0.25, timeout=2.0, fall=2, rise=1),
        startup_timeout=180.0,
        drain_seconds=0.5,
        backoff_base=0.2,
    )
    command = serve_command(model=HASHING, cache_url="none")
    async with ClusterSupervisor(options, command=command) as sup:
        stop_checks, stop_load = asyncio.Event(), asyncio.Event()
        checks = asyncio.create_task(sup.serve(stop_checks))
        load = asyncio.create_task(
            keepalive_load(f"http://127.0.0.1:{port}/v1/embeddings", args.concurrency, stop_load)
        )
        warm_end = time.perf_counter() + 1.0
        await asyncio.sleep(1.0 + args.steady)
        event_begin = time.perf_counter()
        await EVENTS[name](sup)
        event_end = time.perf_counter()
        await asyncio.sleep(1.0)
        stop_load.set()
        record = await load
        stop_checks.set()
        await checks
        reloads = sup.reloads + (5 if name == "reload" else 0)
    steady, _ = record.p99_ms(warm_end, event_begin)
    during, count = record.p99_ms(event_begin, event_end)
    return Figures(
        scenario=name,
        requests=len(record.latencies),
        failures=sum(record.errors.values()),
        steady_p99_ms=round(steady, 2),
        event_p99_ms=round(during, 2),
        p99_ratio=round(during / steady, 2) if steady else 0.0,
        event_requests=count,
        event_seconds=round(event_end - event_begin, 2),
        reloads=reloads,
        errors=dict(record.errors),
    )


def report(results: list[Figures], args: argparse.Namespace) -> None:
    table = Table(
        title=f"redline cluster events, 3 replicas, {args.concurrency} keep-alive clients"
    )
    columns = (
        "scenario",
        "requests",
        "failures",
        "steady p99 ms",
        "event p99 ms",
        "ratio",
        "event s",
        "reloads",
        "errors",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("scenario", "errors") else "right")
    for f in results:
        table.add_row(
            f.scenario,
            str(f.requests),
            str(f.failures),
            f"{f.steady_p99_ms:.1f}",
            f"{f.event_p99_ms:.1f}",
            f"{f.p99_ratio:.2f}x",
            f"{f.event_seconds:.1f}",
            str(f.reloads),
            ", ".join(f"{k}: {v}" for k, v in f.errors.items()) or "-",
        )
    Console(width=140).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "cluster_events",
        "concurrency": args.concurrency,
        "steady_seconds": args.steady,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "results": [asdict(f) for f in results],
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    Console().print(f"wrote {RESULTS}")


async def main(args: argparse.Namespace) -> list[Figures]:
    tmp = Path(tempfile.mkdtemp(prefix="redline-cluster-events-"))
    return [await run_scenario(name, args, tmp) for name in args.scenarios.split(",")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter steady phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scenarios", default="kill,roll,scale,reload")
    arguments = parser.parse_args()
    arguments.steady = 4.0 if arguments.quick else 8.0
    unknown = set(arguments.scenarios.split(",")) - set(EVENTS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; allowed: {', '.join(EVENTS)}")
    report(asyncio.run(main(arguments)), arguments)
