"""Cache-aside (single-flight, negative caching, Bloom) and write-through on every backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from redline.cache.base import MISSING, Cache
from redline.cache.bloom import BloomFilter, RedisBloomFilter
from redline.cache.invalidation import RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.strategies import (
    CacheAside,
    cache_aside,
    cache_aside_stats,
    is_negative,
    write_through,
)
from redline.cache.tiered import TieredCache
from redline.exceptions import CacheUnavailable
from tests._services import RedisClusterServers, RedisServer

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis", "cluster"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    namespace = f"strat-{uuid.uuid4().hex[:8]}"
    backend: Cache
    if request.param == "memory":
        backend = MemoryCache()
    elif request.param == "redis":
        backend = RedisCache.from_url(request.getfixturevalue("redis_url"), namespace=namespace)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        backend = RedisCache.from_cluster_nodes(cluster.startup_nodes, namespace=namespace)
    yield backend
    await backend.close()


class Loader:
    """A counting loader that returns *value* after an optional delay."""

    def __init__(self, value: Any = "v", delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


async def test_miss_loads_and_stores_then_hits(cache: Cache) -> None:
    loader = Loader({"name": "Ada"})
    assert await cache_aside(cache, "user:1", loader, ttl=60) == {"name": "Ada"}
    assert await cache_aside(cache, "user:1", loader, ttl=60) == {"name": "Ada"}
    assert loader.calls == 1
    assert await cache.get("user:1") == {"name": "Ada"}
    stats = cache_aside_stats(cache)
    assert (stats.misses, stats.hits, stats.loads) == (1, 1, 1)


async def test_concurrent_misses_share_one_load(cache: Cache) -> None:
    loader = Loader(42, delay=0.1)
    results = await asyncio.gather(*(cache_aside(cache, "hot", loader) for _ in range(200)))
    assert results == [42] * 200
    assert loader.calls == 1
    # Every other caller waited on that one load, or (a read answered after the load's write,
    # seen on a loaded box over the Cluster) found its value: none loaded, none was lost.
    stats = cache_aside_stats(cache)
    assert (stats.loads, stats.coalesced + stats.hits) == (1, 199)
    assert stats.misses == 1 + stats.coalesced


async def test_loader_error_reaches_every_waiter_and_is_not_cached(cache: Cache) -> None:
    failing = Loader(RuntimeError("db down"), delay=0.05)
    results = await asyncio.gather(
        *(cache_aside(cache, "k", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) and str(r) == "db down" for r in results)
    assert failing.calls == 1
    assert await cache.get("k") is MISSING
    assert await cache_aside(cache, "k", Loader("ok")) == "ok"


async def test_not_found_is_negatively_cached(cache: Cache) -> None:
    loader = Loader(MISSING)
    assert await cache_aside(cache, "ghost", loader, negative_ttl=30) is MISSING
    assert await cache_aside(cache, "ghost", loader, negative_ttl=30) is MISSING
    assert loader.calls == 1
    assert is_negative(await cache.get("ghost"))
    assert cache_aside_stats(cache).negative_hits == 1


async def test_negative_entry_expires_after_negative_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(timer=clock)
    loader = Loader(MISSING)
    aside = CacheAside(cache, ttl=3600, negative_ttl=5)
    assert await aside.get("ghost", loader) is MISSING
    clock.now += 4
    assert await aside.get("ghost", loader) is MISSING
    assert loader.calls == 1
    clock.now += 2  # past the short negative TTL, far before the normal one
    loader.value = "appeared"
    assert await aside.get("ghost", loader) == "appeared"
    assert loader.calls == 2


async def test_without_negative_ttl_not_found_is_not_stored(cache: Cache) -> None:
    loader = Loader(MISSING)
    assert await cache_aside(cache, "nothing", loader) is MISSING
    assert await cache_aside(cache, "nothing", loader) is MISSING
    assert loader.calls == 2
    assert await cache.get("nothing") is MISSING


async def test_bloom_filter_rules_out_absent_keys_without_loading(cache: Cache) -> None:
    bloom = BloomFilter(1000, 0.001)
    bloom.add_many(f"item:{i}" for i in range(100))
    loader = Loader("row")
    for i in range(100, 300):
        assert await cache_aside(cache, f"item:{i}", loader, bloom=bloom) is MISSING
    assert await cache_aside(cache, "item:7", loader, bloom=bloom) == "row"
    assert loader.calls == 1
    assert cache_aside_stats(cache).bloom_rejections >= 199  # 0.1% may be false positives


async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    cache = MemoryCache()
    loader = Loader("v", delay=0.2)
    first = asyncio.create_task(cache_aside(cache, "k", loader))
    second = asyncio.create_task(cache_aside(cache, "k", loader))
    await asyncio.sleep(0.05)
    first.cancel()
    assert await second == "v"
    assert first.cancelled()
    assert loader.calls == 1


async def test_when_every_caller_is_cancelled_the_load_is_cancelled_and_nothing_stored() -> None:
    cache = MemoryCache()
    loader = Loader("v", delay=0.2)
    callers = [asyncio.create_task(cache_aside(cache, "k", loader)) for _ in range(2)]
    await asyncio.sleep(0.05)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.sleep(0.25)  # the old code let the load run on and store "v"
    assert await cache.get("k") is MISSING
    assert await cache_aside(cache, "k", loader) == "v"
    assert loader.calls == 2


async def test_without_single_flight_each_concurrent_miss_loads() -> None:
    loader = Loader("v", delay=0.05)
    aside = CacheAside(MemoryCache(), single_flight=False)
    assert not aside.single_flight
    assert await asyncio.gather(*(aside.get("k", loader) for _ in range(4))) == ["v"] * 4
    assert loader.calls == 4
    assert aside.stats().coalesced == 0


async def test_jitter_spreads_the_stored_ttl() -> None:
    cache = MemoryCache()
    rolls = iter([0.0, 1.0])
    aside = CacheAside(cache, ttl=100, jitter=0.2, rand=lambda: next(rolls))
    await aside.get("low", Loader(1))
    await aside.get("high", Loader(2))
    low, high = await cache.ttl("low"), await cache.ttl("high")
    assert low is not None
    assert high is not None
    assert 79 < low <= 80
    assert 119 < high <= 120
    with pytest.raises(ValueError, match=r"^jitter must be >= 0 and < 1, got 1$"):
        CacheAside(cache, jitter=1)


async def test_lock_true_needs_a_redis_backed_cache() -> None:
    with pytest.raises(ValueError, match=r"lock=True needs a Redis-backed cache .*got MemoryCache"):
        await cache_aside(MemoryCache(), "k", Loader(), lock=True)


async def test_option_misuse_is_rejected() -> None:
    cache = MemoryCache()
    with pytest.raises(ValueError, match="negative_ttl must be > 0, got 0"):
        await cache_aside(cache, "k", Loader(), negative_ttl=0)
    with pytest.raises(ValueError, match=r"early_refresh needs a ttl"):
        await cache_aside(cache, "k", Loader(), early_refresh=1.0)


async def test_lock_true_on_redis_runs_the_loader_once(redis_url: str) -> None:
    cache = RedisCache.from_url(redis_url, namespace=f"lk-{uuid.uuid4().hex[:8]}")
    try:
        loader = Loader([1, 2], delay=0.1)
        aside = CacheAside(cache, lock=True)
        assert await asyncio.gather(*(aside.get("k", loader) for _ in range(20))) == [[1, 2]] * 20
        assert loader.calls == 1
        assert "CacheAside RedisCache" in repr(aside)
    finally:
        await cache.close()


async def test_lock_true_on_a_tiered_cache_locks_under_its_redis_namespace(redis_url: str) -> None:
    """The lock's key is in the Redis tier's namespace (was ``redline:`` for a tiered cache)."""
    namespace = f"lkt-{uuid.uuid4().hex[:8]}"
    l2 = RedisCache.from_url(redis_url, namespace=namespace)
    cache = TieredCache(MemoryCache(), l2)
    held: list[int] = []

    async def load() -> str:
        held.append(await l2.client.exists(f"{namespace}:lock:{{k}}"))
        return "v"

    try:
        assert await CacheAside(cache, lock=True).get("k", load) == "v"
        assert held == [1]
    finally:
        await cache.close()


async def test_reads_survive_a_dead_redis_cache_lock_and_bloom(fresh_redis: RedisServer) -> None:
    cache = RedisCache.from_url(fresh_redis.url, namespace="down")
    bloom = RedisBloomFilter(cache.client, "down", 100)
    await bloom.add("k")
    try:
        fresh_redis.kill()
        loader = Loader("computed")
        aside = CacheAside(cache, lock=True, bloom=bloom, negative_ttl=5)
        assert await aside.get("k", loader) == "computed"
        assert await aside.get("other", loader) == "computed"  # the filter can't rule it out
        assert loader.calls == 2
        assert aside.stats().errors >= 4  # reads, lock and writes, each logged and counted
    finally:
        await cache.close()


# -- write-through -----------------------------------------------------------------------


class Database:
    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.fail: Exception | None = None

    async def write(self, key: str, value: Any) -> None:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.rows[key] = value


async def test_write_through_updates_the_source_then_the_cache(cache: Cache) -> None:
    db = Database()
    await write_through(cache, "user:1", {"v": 1}, db.write, ttl=60)
    assert db.rows == {"user:1": {"v": 1}}
    assert await cache.get("user:1") == {"v": 1}


async def test_failed_write_leaves_the_old_cached_value(cache: Cache) -> None:
    db = Database()
    await write_through(cache, "user:1", {"v": 1}, db.write)
    db.fail = RuntimeError("constraint violated")
    with pytest.raises(RuntimeError, match="constraint violated"):
        await write_through(cache, "user:1", {"v": 2}, db.write)
    assert await cache.get("user:1") == {"v": 1}
    assert db.rows == {"user:1": {"v": 1}}


async def test_write_through_with_redis_down_raises_after_the_write(
    fresh_redis: RedisServer,
) -> None:
    cache = RedisCache.from_url(fresh_redis.url, namespace="wt")
    db = Database()
    try:
        fresh_redis.kill()
        with pytest.raises(CacheUnavailable):
            await write_through(cache, "k", 1, db.write)
        assert db.rows == {"k": 1}  # the source of truth has it; the cache error is surfaced
    finally:
        await cache.close()


def _start_tiered_worker(url: str, namespace: str, channel: str, key: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache._procs.tiered_worker", url, namespace, channel, key],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
async def test_write_through_invalidates_the_l1_of_another_process(redis_url: str) -> None:
    namespace, channel = f"wt-{uuid.uuid4().hex[:8]}", f"inv-{uuid.uuid4().hex[:8]}"

    def tiered() -> TieredCache:
        return TieredCache(
            MemoryCache(),
            RedisCache.from_url(redis_url, namespace=namespace),
            invalidation=RedisInvalidation(redis_url, channel),
            l1_ttl=300,
        )

    db = Database()
    async with tiered() as cache:
        await write_through(cache, "user:1", {"v": 1}, db.write)
        worker = _start_tiered_worker(redis_url, namespace, channel, "user:1")
        try:
            assert worker.stdout is not None
            ready = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
            assert ready.strip() == 'ready {"v": 1}'  # the other process has it in its L1

            db.fail = RuntimeError("rejected")
            with pytest.raises(RuntimeError, match="rejected"):
                await write_through(cache, "user:1", {"v": 99}, db.write)
            db.fail = None
            await write_through(cache, "user:1", {"v": 2}, db.write)

            line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 30)
            assert line.strip() == 'changed {"v": 2}'  # never saw the failed {"v": 99}
        finally:
            worker.kill()
            worker.wait(10)
