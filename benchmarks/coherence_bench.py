"""TieredCache coherence bounds, measured: what a reader in another process can observe.

    python benchmarks/coherence_bench.py [--json benchmarks/results/coherence_bench.json]

It starts its own redis-server on a free loopback port (and a fault-injecting TCP proxy from
the test suite), builds TieredCaches with the default settings (``ping_interval`` 1 s,
``offline_l1_ttl`` 1 s, ``publish_timeout`` 1 s) and measures:

a. propagation: a write in one cache until another cache's L1 has dropped the key (link up);
b. half-open detection: the proxy blackholes a subscriber's link; time until the link counts
   as down and L1 is flushed;
c. Redis frozen (SIGSTOP) for 3 s under a closed loop of writes: the longest and p99 write,
   and when the other cache flushed its L1;
d. Redis killed for 3 s under the same loop: lines logged by the invalidation link and the
   publisher of both caches (RedisCache's own lines are not counted here).

It prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from redline._services import HOST, FaultProxy, RedisServer
from redline.cache.base import MISSING
from redline.cache.invalidation import RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.tiered import TieredCache

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "coherence_bench.json"


class LineCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "redline.cache.invalidation" or record.name == "redline.cache.tiered":
            self.lines.append(record.getMessage())  # the link's and the publisher's own lines


def tiered(url: str, channel_nodes: Any, name: str) -> TieredCache:
    return TieredCache(
        MemoryCache(),
        RedisCache.from_url(url, namespace="coherence-bench"),
        invalidation=RedisInvalidation(channel_nodes, channel="coherence-bench"),
        name=name,
    )


async def wait_for(condition: Any, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError("condition never held")
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def propagation(url: str, rounds: int) -> dict[str, float]:
    writer, reader = tiered(url, url, "writer"), tiered(url, url, "reader")
    async with writer, reader:
        samples = []
        for i in range(rounds):
            await writer.set("k", i)
            await writer.wait_published(5)
            await asyncio.sleep(0.002)  # let the reader apply that invalidation first
            await reader.get("k")
            await wait_for(lambda i=i: reader.get_nowait("k") == i)
            started = time.monotonic()
            await writer.set("k", -i)
            await wait_for(lambda: reader.get_nowait("k") is MISSING)
            samples.append(time.monotonic() - started)
        await writer.clear()
    samples.sort()
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000,
        "max_ms": samples[-1] * 1000,
    }


async def half_open(server: RedisServer, rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        proxy = await asyncio.to_thread(FaultProxy((HOST, server.port)).start)
        reader = tiered(server.url, [proxy.address], "reader")
        try:
            async with reader:
                await reader.set("k", 1)
                assert reader.get_nowait("k") == 1
                await asyncio.to_thread(proxy.set_mode, "blackhole")
                started = time.monotonic()
                await wait_for(lambda reader=reader: reader.get_nowait("k") is MISSING)
                samples.append(time.monotonic() - started)
                await asyncio.to_thread(proxy.set_mode, "pass")
        finally:
            await asyncio.to_thread(proxy.stop)
    return {"mean_s": statistics.mean(samples), "max_s": max(samples)}


async def outage(server: RedisServer, kind: str, seconds: float) -> dict[str, Any]:
    writer, reader = tiered(server.url, server.url, "writer"), tiered(server.url, server.url, "r")
    counter = LineCounter()
    logger = logging.getLogger("redline.cache")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    async with writer, reader:
        await writer.set("k", 0, ttl=300)
        await reader.get("k")
        latencies: list[float] = []
        flushed: list[float] = []
        assert server.proc is not None
        if kind == "freeze":
            os.kill(server.proc.pid, signal.SIGSTOP)
        else:
            await asyncio.to_thread(server.kill)
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < seconds:
            before = time.monotonic()
            await writer.set("k", i, ttl=300)
            latencies.append(time.monotonic() - before)
            if not flushed and reader.get_nowait("k") is MISSING:
                flushed.append(time.monotonic() - started)
            i += 1
            await asyncio.sleep(0.001)
        if kind == "freeze":
            os.kill(server.proc.pid, signal.SIGCONT)
        else:
            await asyncio.to_thread(server.start)
        await wait_for(lambda: bool(writer.invalidation and writer.invalidation.connected))
        await writer.wait_published(15)
        await writer.clear()
    logger.removeHandler(counter)
    latencies.sort()
    return {
        "writes": len(latencies),
        "max_write_ms": latencies[-1] * 1000,
        "p99_write_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "reader_flushed_after_s": flushed[0] if flushed else None,
        "log_lines": len(counter.lines),
        "log": counter.lines,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer().start()
    try:
        results = {
            "propagation": await propagation(server.url, args.rounds),
            "half_open_detection": await half_open(server, 3),
            "redis_frozen_3s": await outage(server, "freeze", 3.0),
            "redis_killed_3s": await outage(server, "kill", 3.0),
        }
    finally:
        server.stop()
    return results


def report(results: dict[str, Any]) -> None:
    p, h = results["propagation"], results["half_open_detection"]
    print("TieredCache coherence bounds (defaults: ping_interval 1 s, offline_l1_ttl 1 s)")
    print(f"  propagation, link up      p50 {p['p50_ms']:.1f} ms  p99 {p['p99_ms']:.1f} ms")
    print(
        f"  half-open link detected   mean {h['mean_s']:.2f} s  max {h['max_s']:.2f} s (bound 2 s)"
    )
    for name in ("redis_frozen_3s", "redis_killed_3s"):
        o = results[name]
        print(
            f"  {name:<25} writes {o['writes']:>5}  max write {o['max_write_ms']:.0f} ms  "
            f"p99 {o['p99_write_ms']:.1f} ms  other L1 flushed after "
            f"{o['reader_flushed_after_s']} s  log lines {o['log_lines']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    arguments = parser.parse_args()
    figures = asyncio.run(main(arguments))
    report(figures)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps(figures, indent=2))
