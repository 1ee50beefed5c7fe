"""Fault benchmark: the Redis tier while Redis is frozen, and while a Cluster master dies.

    python benchmarks/faults_bench.py [--label new] [--quick] [--rows all|cache|server]
                                      [--json PATH]

It starts its own redis-server (and a 6-node Redis Cluster) on free loopback ports, then:

a. **Redis frozen (SIGSTOP) 5 s** under an open-loop load (reads and writes arriving at a
   fixed rate, whatever the earlier ones are doing, as requests reach a server), through a
   ``TieredCache`` (L1 smaller than the key set, so misses reach Redis) and through a bare
   ``RedisCache``: p50 / p99 / max latency of the calls before the freeze and during it, and
   the calls that raised (a ``TieredCache`` must raise none; a ``RedisCache`` raises
   ``CacheUnavailable`` by contract, counted apart).
b. **One Cluster master SIGKILLed** under an open-loop read load, with the cluster's
   ``cluster-require-full-coverage`` at ``no`` (what a cache cluster should run) and at the
   default ``yes``: the share of reads of the other masters' keys that hit within 1 s,
   before the kill and from the kill to 3 s after the replica's promotion, and how long after
   the promotion the dead master's keys hit again.
c. **Redis frozen (SIGSTOP) 4 s under a real ``redline serve``** (HashingModel, 5 ms per
   batch, ``--cache-url redis://...?tiered=1``, durable usage on the same Redis): keep-alive
   clients (one connection each, back to back) send one repeated and one new input per
   request; p50 / p99 of the requests before the freeze and during it (at the client, and in
   the server's handler from its ``Server-Timing`` total, which a starved client process
   does not blur), their ratios, and the requests that failed. "Before" counts the requests
   sent and answered in the 2 s before the freeze; the few in flight when it began wait for
   the first stall detection and are reported apart (``caught_by_freeze``,
   ``caught_max_ms``). ``--rows server`` runs only this row.

Each run is stored in the JSON under ``--label``; the table shows every label stored so far
side by side, so running it once per version compares them (``PYTHONPATH=<old>/src``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import redline

ROOT = Path(__file__).resolve().parents[1]
# This checkout's service harness, also when PYTHONPATH names an older redline without one.
if str(ROOT / "src" / "redline") not in redline.__path__:
    redline.__path__.append(str(ROOT / "src" / "redline"))

from redline._services import RedisClusterServers, RedisServer  # noqa: E402
from redline._services.processes import frozen_for  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "faults_bench.json"
SERVED_WITHIN = 1.0  # seconds: a hit slower than this served nobody in time
HUNG_AFTER = 20.0  # seconds: a call still waiting then is counted as hung and dropped


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def open_loop(
    rate: int, stop: asyncio.Event, op: Callable[[random.Random], Awaitable[None]]
) -> None:
    """Start *rate* calls of ``op`` a second until *stop*; wait for the stragglers.

    A loop that falls behind (a busy box) does not try to catch up by more than 0.1 s, so
    the load cannot snowball into a backlog that never drains.
    """
    rng = random.Random(11)
    tasks: set[asyncio.Task[None]] = set()
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    next_at = time.monotonic()
    while not stop.is_set():
        for _ in range(per_tick):
            task = asyncio.create_task(op(rng))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        next_at = max(next_at + tick, time.monotonic() - 0.1)
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*tasks, return_exceptions=True)


# -- a. a frozen Redis ----------------------------------------------------------------------


async def frozen_redis(kind: str, rate: int, freeze: float, keys: int = 2_000) -> dict[str, Any]:
    from redline.cache.memory import MemoryCache
    from redline.cache.redis import RedisCache
    from redline.cache.tiered import TieredCache
    from redline.exceptions import CacheUnavailable

    server = RedisServer().start()
    try:
        l2 = RedisCache.from_url(server.url, namespace="bench")
        cache: Any = l2
        if kind == "tiered":
            cache = TieredCache(MemoryCache(max_entries=keys // 4), l2)
        await l2.set_many({f"k{i}": {"id": i} for i in range(keys)})
        records: list[tuple[float, float, str]] = []  # (start, seconds, outcome)

        async def call(rng: random.Random) -> None:
            key = f"k{rng.randrange(keys)}"
            started = time.monotonic()
            try:
                if rng.random() < 0.8:
                    await asyncio.wait_for(cache.get(key), HUNG_AFTER)
                else:
                    await asyncio.wait_for(cache.set(key, {"id": key}), HUNG_AFTER)
                outcome = "ok"
            except CacheUnavailable:
                outcome = "unavailable"
            except TimeoutError:
                outcome = "hung"
            except Exception:
                outcome = "raised"
            records.append((started, time.monotonic() - started, outcome))

        stop = asyncio.Event()
        load = asyncio.create_task(open_loop(rate, stop, call))
        await asyncio.sleep(3.0)
        assert server.proc is not None
        frozen_at, thawed_at = await frozen_for(server.proc.pid, freeze)
        await asyncio.sleep(2.0)
        stop.set()
        await load
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cache.close(), 5)
    finally:
        server.stop()

    def window(start: float, end: float) -> dict[str, Any]:
        inside = [(s, o) for t, s, o in records if start <= t < end]
        seconds = [s for s, _ in inside]
        return {
            "calls": len(inside),
            "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
            "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
            "max_ms": round(max(seconds, default=0.0) * 1000, 1),
            "unavailable": sum(o == "unavailable" for _, o in inside),
            "raised": sum(o == "raised" for _, o in inside),
            "hung": sum(o == "hung" for _, o in inside),
        }

    before = window(frozen_at - 2.0, frozen_at)
    during = window(frozen_at, thawed_at)
    return {
        "cache": kind,
        "rate_per_s": rate,
        "freeze_s": freeze,
        "before": before,
        "during": during,
        "p99_ratio": round(during["p99_ms"] / before["p99_ms"], 1) if before["p99_ms"] else None,
    }


# -- b. a Cluster master killed -------------------------------------------------------------


async def killed_master(full_coverage: str, rate: int, keys: int = 240) -> dict[str, Any]:
    from redline.cache.redis import RedisCache
    from redline.exceptions import CacheUnavailable

    cluster = RedisClusterServers().start()
    try:
        for node in cluster.nodes:
            node.cli("config", "set", "cluster-require-full-coverage", full_coverage)
        cache = RedisCache.from_cluster_nodes(cluster.startup_nodes, namespace="bench")
        await cache.set_many({f"k{i}": i for i in range(keys)})
        owners = {
            f"k{i}": cache.client.get_node_from_key(cache.full_key(f"k{i}")).name  # type: ignore[union-attr]
            for i in range(keys)
        }
        victim_address = owners["k0"]
        victim = next(n for n in cluster.nodes if n.port == int(victim_address.rsplit(":")[1]))
        replica = cluster.replica_of(victim)
        await asyncio.to_thread(cluster.wait_for_replicas, 60.0)
        victim_keys = {k for k, owner in owners.items() if owner == victim_address}
        records: list[tuple[float, str, str]] = []

        async def read(rng: random.Random) -> None:
            key = f"k{rng.randrange(keys)}"
            started = time.monotonic()
            try:
                value = await asyncio.wait_for(cache.get(key), HUNG_AFTER)
                late = time.monotonic() - started > SERVED_WITHIN
                outcome = "miss" if value != int(key[1:]) else "late" if late else "hit"
            except CacheUnavailable:
                outcome = "unavailable"
            except TimeoutError:
                outcome = "hung"
            except Exception:
                outcome = "raised"
            records.append((started, key, outcome))

        stop = asyncio.Event()
        load = asyncio.create_task(open_loop(rate, stop, read))
        await asyncio.sleep(2.0)
        killed_at = time.monotonic()
        victim.kill()
        deadline = time.monotonic() + 60
        while (await asyncio.to_thread(replica.cli, "role")).splitlines()[0] != "master":
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {replica.port} was not promoted within 60 s")
            await asyncio.sleep(0.05)
        promoted_at = time.monotonic()
        await asyncio.sleep(3.0)
        stop.set()
        await load
        end = time.monotonic()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cache.close(), 5)
    finally:
        cluster.stop()

    def hit_ratio(victims: bool, start: float, stop_at: float) -> float:
        outcomes = [
            o for t, k, o in records if (k in victim_keys) == victims and start <= t < stop_at
        ]
        return round(sum(o == "hit" for o in outcomes) / max(1, len(outcomes)), 3)

    first_hit = min(
        (t for t, k, o in records if k in victim_keys and t >= promoted_at and o == "hit"),
        default=None,
    )
    return {
        "full_coverage": full_coverage,
        "rate_per_s": rate,
        "others_hit_before": hit_ratio(False, 0.0, killed_at),
        "others_hit_during": hit_ratio(False, killed_at, end),
        "failover_s": round(promoted_at - killed_at, 2),
        "dead_keys_back_after_promotion_s": (
            None if first_hit is None else round(first_hit - promoted_at, 2)
        ),
        "raised": sum(o == "raised" for _, _, o in records),
        "hung": sum(o == "hung" for _, _, o in records),
    }


# -- c. a frozen Redis under a server -------------------------------------------------------


def start_server(redis: RedisServer) -> tuple[subprocess.Popen[bytes], str, IO[bytes]]:
    """``redline serve`` (HashingModel, 5 ms a batch) on *redis* with ``tiered=1``, running
    the ``redline`` this script imports; its process, URL and log file."""
    import redline
    from redline._services import free_port, wait_for_port

    port = free_port()
    workdir = Path(redis.workdir) / "serve"
    workdir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(redline.__file__).resolve().parents[1]),
        "REDLINE_DATA_DIR": str(workdir / "data"),
        "REDLINE_HASHING_DELAY_MS": "5",
        "REDLINE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "redline", "serve", "--port", str(port)]
    command += ["--model", "redline.serve.testing:create_hashing_model"]
    command += ["--cache-url", f"{redis.url}?tiered=1"]
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    wait_for_port(port, timeout=60, proc=proc)
    return proc, f"http://127.0.0.1:{port}", log


async def frozen_server(clients: int, freeze: float) -> dict[str, Any]:
    import httpx

    from redline._services import stop_process

    server = RedisServer().start()
    proc, url, log = await asyncio.to_thread(start_server, server)
    # (start, seconds at the client, seconds in the server's handler (Server-Timing), ok)
    records: list[tuple[float, float, float, bool]] = []
    try:
        async with httpx.AsyncClient(base_url=url) as probe:
            while (await probe.get("/ready")).status_code != 200:
                await asyncio.sleep(0.05)
        stop = asyncio.Event()

        async def client(index: int) -> None:
            rng = random.Random(index)
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(base_url=url, timeout=HUNG_AFTER, limits=limits) as c:
                sent = 0
                while not stop.is_set():
                    inputs = [f"repeated {rng.randrange(40)}", f"new {index} {sent}"]
                    sent += 1
                    started = time.monotonic()
                    handler = float("nan")
                    try:
                        response = await c.post("/v1/embeddings", json={"input": inputs})
                        ok = response.status_code == 200
                        handler = _handler_seconds(response.headers.get("server-timing", ""))
                    except httpx.HTTPError:
                        ok = False
                    records.append((started, time.monotonic() - started, handler, ok))

        load = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(3.0)
        assert server.proc is not None
        frozen_at, thawed_at = await frozen_for(server.proc.pid, freeze)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*load)
    finally:
        stop_process(proc)
        log.close()
        server.stop()

    def window(start: float, end: float, done_by: float = math.inf) -> dict[str, Any]:
        inside = [(s, h, ok) for t, s, h, ok in records if start <= t < end and t + s < done_by]
        seconds = [s for s, _, _ in inside]
        handler = [h for _, h, ok in inside if ok]
        return {
            "requests": len(inside),
            "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
            "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
            "max_ms": round(max(seconds, default=0.0) * 1000, 1),
            "handler_p99_ms": round(percentile(handler, 0.99) * 1000, 2),
            "failed": sum(not ok for _, _, ok in inside),
        }

    # "before": the requests sent and answered in the 2 s before the freeze; the ones in
    # flight when it began are reported apart ("caught"), as are neither before nor during.
    before = window(frozen_at - 2.0, frozen_at, done_by=frozen_at)
    during = window(frozen_at, thawed_at)
    caught = [s for t, s, _, _ in records if t < frozen_at <= t + s]

    def ratio(key: str) -> float | None:
        return round(during[key] / before[key], 2) if before[key] else None

    return {
        "clients": clients,
        "freeze_s": freeze,
        "before": before,
        "during": during,
        "p99_ratio": ratio("p99_ms"),
        "handler_p99_ratio": ratio("handler_p99_ms"),
        "caught_by_freeze": len(caught),
        "caught_max_ms": round(max(caught, default=0.0) * 1000, 1),
        "load_average": os.getloadavg()[0],
    }


def _handler_seconds(server_timing: str) -> float:
    """The ``total`` of a ``Server-Timing`` header, in seconds (NaN when absent)."""
    for part in server_timing.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name == "total" and duration:
            return float(duration) / 1000
    return float("nan")


# -- report ---------------------------------------------------------------------------------


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    frozen = Table(title="a. Redis frozen (SIGSTOP) under open-loop load: latency of the calls")
    for column in ("version", "cache", "calls/s", "p99 before", "p99 during", "ratio"):
        frozen.add_column(column, justify="right")
    for column in ("max during", "unavailable", "raised"):
        frozen.add_column(column, justify="right")
    killed = Table(title="b. one Cluster master SIGKILLed: reads of the other masters' keys")
    for column in ("version", "full coverage", "hit before", "hit during", "failover"):
        killed.add_column(column, justify="right")
    killed.add_column("dead keys back after", justify="right")
    killed.add_column("raised", justify="right")
    for label, run in results["runs"].items():
        for row in run.get("frozen", []):
            before, during = row["before"], row["during"]
            frozen.add_row(
                label,
                row["cache"],
                str(row["rate_per_s"]),
                f"{before['p99_ms']:.1f} ms",
                f"{during['p99_ms']:.1f} ms",
                f"{row['p99_ratio']}x",
                f"{during['max_ms']:.0f} ms",
                str(during["unavailable"]),
                str(during["raised"]),
            )
        for row in run.get("killed", []):
            back = row["dead_keys_back_after_promotion_s"]
            killed.add_row(
                label,
                row["full_coverage"],
                f"{row['others_hit_before']:.3f}",
                f"{row['others_hit_during']:.3f}",
                f"{row['failover_s']:.2f} s",
                "never" if back is None else f"{back:.2f} s",
                str(row["raised"]),
            )
    served = Table(title="c. Redis frozen (SIGSTOP) under `redline serve`: request latency")
    for column in ("version", "clients", "p99 before", "p99 during", "ratio", "max during"):
        served.add_column(column, justify="right")
    for column in ("handler p99 before", "during", "ratio", "failed", "load"):
        served.add_column(column, justify="right")
    for label, run in results["runs"].items():
        for row in run.get("server", []):
            before, during = row["before"], row["during"]
            served.add_row(
                label,
                str(row["clients"]),
                f"{before['p99_ms']:.1f} ms",
                f"{during['p99_ms']:.1f} ms",
                f"{row['p99_ratio']}x",
                f"{during['max_ms']:.0f} ms",
                f"{before.get('handler_p99_ms', float('nan')):.1f} ms",
                f"{during.get('handler_p99_ms', float('nan')):.1f} ms",
                f"{row.get('handler_p99_ratio')}x",
                str(before["failed"] + during["failed"]),
                f"{row.get('load_average', float('nan')):.1f}",
            )
    console = Console(width=130)
    console.print(frozen)
    console.print(killed)
    console.print(served)
    console.print(
        f"hit = read answered with its value within {SERVED_WITHIN:.0f} s; 'during' runs from "
        "the kill to 3 s after the replica's promotion"
    )


async def run(quick: bool, rows: str) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    if rows in ("all", "server"):
        server = []
        for _ in range(1 if quick else 3):
            server.append(await frozen_server(8, 4.0))
            print(f"c. frozen Redis under a server: {server[-1]}", file=sys.stderr, flush=True)
        outcome["server"] = server
    if rows == "server":
        return outcome
    rate = 200 if quick else 400
    frozen = []
    for kind in ("tiered", "redis"):
        frozen.append(await frozen_redis(kind, rate, 5.0))
        print(f"a. frozen Redis, {kind}: {frozen[-1]}", file=sys.stderr, flush=True)
    killed = []
    for coverage in ("no",) if quick else ("no", "yes"):
        killed.append(await killed_master(coverage, 250))
        print(f"b. killed master, coverage {coverage}: {killed[-1]}", file=sys.stderr, flush=True)
    return {**outcome, "frozen": frozen, "killed": killed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="name of this run in the table")
    parser.add_argument("--quick", action="store_true", help="lower rate, one Cluster config")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument(
        "--rows", choices=("all", "cache", "server"), default="all", help="which rows to run"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import redline

    results: dict[str, Any] = {"runs": {}}
    if args.json.exists():
        results = json.loads(args.json.read_text())
    outcome = asyncio.run(run(args.quick, args.rows))
    outcome["source"] = str(Path(redline.__file__).parent)
    outcome["python"] = platform.python_version()
    results["runs"][args.label] = outcome
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
