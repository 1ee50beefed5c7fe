"""Cache strategies benchmark: stampede locks, penetration guards, write-behind throughput.

    python benchmarks/strategies_bench.py [--quick] [--json PATH]

It starts its own redis-server and PostgreSQL on free loopback ports (and stops them), then:

a. stampede: 1000 concurrent cold callers of ONE key whose body takes 200 ms, through
   cashews ``@cache(lock=True)``, aiocache ``cached_stampede`` and redline
   ``cache_aside(lock=True)``, all on the same Redis: body runs, caller errors, wall time,
   and Redis commands issued (``INFO commandstats`` delta);
b. penetration: lookups of keys that do not exist, through ``cache_aside`` with no guard,
   with an in-process ``BloomFilter`` and with a ``RedisBloomFilter``: loader (database)
   calls and lookups/s;
c. write-behind: distinct-key writes into a PostgreSQL table, one upsert per write (50
   concurrent) vs ``WriteBehind`` + ``PostgresSink`` over a memory queue and over a Redis
   Stream: writes/s until everything is in the table.

It prints a table and writes the figures as JSON. The numbers depend on the machine: run it
on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from redline._services import PostgresServer, RedisServer  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "strategies_bench.json"
CALLERS = 1000
BODY = 0.2


async def command_calls(client: Any) -> int:
    """Commands Redis has run so far, not counting INFO itself."""
    stats = await client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


async def stampede(
    client: Any, name: str, call: Callable[[], Awaitable[Any]], runs: list[int]
) -> dict[str, Any]:
    """Fire CALLERS concurrent calls at once; count body runs, errors, wall time, commands."""
    before = await command_calls(client)
    started = time.perf_counter()
    results = await asyncio.gather(*(call() for _ in range(CALLERS)), return_exceptions=True)
    wall = time.perf_counter() - started
    commands = await command_calls(client) - before - 1
    errors = [r for r in results if isinstance(r, BaseException)]
    kinds = sorted({type(e).__name__ for e in errors})
    return {
        "name": name,
        "body_runs": runs[0],
        "errors": len(errors),
        "error_kinds": kinds,
        "wall_s": round(wall, 3),
        "redis_commands": commands,
    }


async def bench_stampede(url: str, port: int) -> list[dict[str, Any]]:
    from aiocache import RedisCache as AiocacheRedis
    from aiocache import cached_stampede
    from cashews import Cache as CashewsCache
    from redis.asyncio import Redis

    from redline.cache.redis import RedisCache
    from redline.cache.strategies import CacheAside

    client = Redis.from_url(url)
    rows = []

    runs = [0]

    async def body() -> dict[str, int]:
        runs[0] += 1
        await asyncio.sleep(BODY)
        return {"answer": 42}

    cache = RedisCache.from_url(url, namespace="bench-redline")
    aside = CacheAside(cache, ttl=3600, lock=True)
    rows.append(await stampede(client, "redline", lambda: aside.get("cold", body), runs))
    await cache.close()

    runs[0] = 0
    cashews = CashewsCache()
    cashews.setup(url)

    @cashews(ttl="1h", lock=True)
    async def cashews_fn() -> dict[str, int]:
        return await body()

    rows.append(await stampede(client, "cashews", cashews_fn, runs))
    await cashews.close()

    runs[0] = 0
    options = {"endpoint": "127.0.0.1", "port": port, "namespace": "bench-aiocache"}

    @cached_stampede(lease=2, ttl=3600, cache=AiocacheRedis, **options)
    async def aiocache_fn() -> dict[str, int]:
        return await body()

    rows.append(await stampede(client, "aiocache", aiocache_fn, runs))
    await client.aclose()
    return rows


async def bench_penetration(url: str, lookups: int) -> list[dict[str, Any]]:
    from redis.asyncio import Redis

    from redline.cache.base import MISSING
    from redline.cache.bloom import BloomFilter, RedisBloomFilter
    from redline.cache.redis import RedisCache
    from redline.cache.strategies import CacheAside

    existing = [f"item:{i}" for i in range(lookups)]
    absent = [f"item:{i}" for i in range(lookups, 2 * lookups)]
    client = Redis.from_url(url)
    local = BloomFilter(lookups, 0.01)
    local.add_many(existing)
    shared = RedisBloomFilter(client, "bench-items", lookups, 0.01)
    await shared.rebuild(existing)
    rows = []
    for name, bloom in (("no guard", None), ("BloomFilter", local), ("RedisBloomFilter", shared)):
        cache = RedisCache.from_url(url, namespace=f"bench-pen-{len(rows)}")
        aside = CacheAside(cache, bloom=bloom)
        calls = 0

        async def loader() -> Any:
            nonlocal calls
            calls += 1
            return MISSING  # the database has no such row

        async def worker(keys: list[str], aside: CacheAside = aside) -> None:
            for key in keys:
                await aside.get(key, loader)

        started = time.perf_counter()
        await asyncio.gather(*(worker(absent[i::50]) for i in range(50)))
        wall = time.perf_counter() - started
        rows.append(
            {
                "name": name,
                "lookups": lookups,
                "loader_calls": calls,
                "lookups_per_s": round(lookups / wall),
            }
        )
        await cache.close()
    await client.aclose()
    return rows


async def bench_write_behind(url: str, dsn: str, writes: int) -> list[dict[str, Any]]:
    import asyncpg
    from redis.asyncio import Redis

    from redline.cache.sinks import PostgresSink
    from redline.cache.write_behind import RedisStreamQueue, WriteBehind

    rows = []
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)

    async def table(name: str) -> PostgresSink:
        sink = PostgresSink(table=name, pool=pool)
        await sink.create_table()
        return sink

    async def count(name: str) -> int:
        return int(await pool.fetchval(f"SELECT count(*) FROM {name}"))

    # One upsert per write, 50 concurrent writers (what a plain write path does).
    direct = await table("bench_direct")

    async def direct_writer(i0: int) -> None:
        for i in range(i0, writes, 50):
            await pool.execute(
                "INSERT INTO bench_direct (key, value, seq) VALUES ($1, $2::jsonb, $3) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, seq = EXCLUDED.seq",
                f"k{i}",
                json.dumps({"i": i}),
                i,
            )

    started = time.perf_counter()
    await asyncio.gather(*(direct_writer(i) for i in range(50)))
    wall = time.perf_counter() - started
    assert await count("bench_direct") == writes
    rows.append(
        {"name": "one upsert per write", "writes": writes, "writes_per_s": round(writes / wall)}
    )
    await direct.close()

    client = Redis.from_url(url)
    for name, queue in (
        ("WriteBehind + MemoryQueue", None),
        ("WriteBehind + RedisStreamQueue", RedisStreamQueue(client, "{bench}:wb", "g", "c1")),
    ):
        table_name = "bench_wb_memory" if queue is None else "bench_wb_stream"
        sink = await table(table_name)
        wb = WriteBehind(None, sink, queue=queue, max_pending=writes + 1, max_batch=1000)

        async def writer(i0: int, wb: WriteBehind = wb) -> None:
            for i in range(i0, writes, 50):
                await wb.write(f"k{i}", {"i": i})

        started = time.perf_counter()
        await asyncio.gather(*(writer(i) for i in range(50)))
        acked = time.perf_counter() - started
        await wb.close()  # until every write is in the table
        wall = time.perf_counter() - started
        assert await count(table_name) == writes
        rows.append(
            {
                "name": name,
                "writes": writes,
                "writes_per_s": round(writes / wall),
                "acknowledged_per_s": round(writes / acked),
                "batches": wb.stats().batches,
            }
        )
    await client.aclose()
    await pool.close()
    return rows


def show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for section, rows in report["results"].items():
        table = Table(title=section)
        columns = list(dict.fromkeys(column for row in rows for column in row))
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(row.get(column, "")) for column in columns))
        console.print(table)
    console.print(report["targets"])


async def run(quick: bool) -> dict[str, Any]:
    lookups = 20_000 if quick else 100_000
    writes = 20_000 if quick else 100_000
    redis = RedisServer().start()
    postgres = PostgresServer().start()
    try:
        results = {
            "stampede": await bench_stampede(redis.url, redis.port),
            "penetration": await bench_penetration(redis.url, lookups),
            "write_behind": await bench_write_behind(redis.url, postgres.dsn, writes),
        }
    finally:
        redis.stop()
        postgres.stop()
    redline = results["stampede"][0]
    targets = {
        "stampede_redline_one_body_run": redline["body_runs"] == 1,
        "stampede_redline_no_errors": redline["errors"] == 0,
        "stampede_redline_wall_within_body_plus_50ms": redline["wall_s"] <= BODY + 0.05,
    }
    return {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "quick": quick,
        "callers": CALLERS,
        "body_s": BODY,
        "results": results,
        "targets": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k lookups/writes instead of 100k")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    # aiocache logs a traceback for every command its pool refuses during the burst.
    logging.getLogger("aiocache").setLevel(logging.CRITICAL)
    report = asyncio.run(run(args.quick))
    show(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
