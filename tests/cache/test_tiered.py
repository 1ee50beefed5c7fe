"""TieredCache: L1/L2 reads and fills, degraded mode, and L1 coherence across processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from redline.cache.base import MISSING, Cache
from redline.cache.decorator import cached
from redline.cache.invalidation import InvalidationMessage, LocalInvalidation, RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.tiered import TieredCache
from redline.exceptions import CacheUnavailable
from tests._services import RedisServer

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    """Wait for *condition* (sync or async) to hold; fail after a generous bound."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def namespace() -> str:
    return f"tt{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def closing() -> AsyncIterator[list[Cache]]:
    """Caches a test built; cleared and closed afterwards."""
    made: list[Cache] = []
    yield made
    for cache in made:
        try:
            await cache.clear()
        finally:
            await cache.close()


async def read_into_l1(cache: TieredCache, key: str, expected: Any) -> None:
    """Read *key* until it sits in *cache*'s L1 (a fill is refused while an invalidation of
    it, published in the background by the writer, arrives during the read)."""

    async def filled() -> bool:
        assert await cache.get(key) == expected
        return bool(cache.get_nowait(key) == expected)

    await eventually(filled, f"{key}={expected!r} in L1")


def redis_tiered(url: str, namespace: str, **kwargs: Any) -> TieredCache:
    return TieredCache(
        MemoryCache(),
        RedisCache.from_url(url, namespace=namespace),
        invalidation=RedisInvalidation(url, channel=f"{namespace}:inv", backoff_initial=0.01),
        **kwargs,
    )


# -- over two MemoryCaches: the read/write logic ----------------------------------------


async def test_tiered_cache_implements_the_protocol_and_validates() -> None:
    assert isinstance(TieredCache(MemoryCache(), MemoryCache()), Cache)
    with pytest.raises(ValueError, match=r"^l1_ttl must be > 0 or None, got 0$"):
        TieredCache(MemoryCache(), MemoryCache(), l1_ttl=0)
    same = MemoryCache()
    with pytest.raises(ValueError, match="two different caches"):
        TieredCache(same, same)


async def test_l2_hit_fills_l1_with_the_remaining_ttl() -> None:
    clock = FakeClock()
    l1, l2 = MemoryCache(timer=clock), MemoryCache(timer=clock)
    cache = TieredCache(l1, l2)
    await l2.set("k", "v", ttl=100)
    clock.now = 60
    assert await cache.get("k") == "v"
    assert await l1.ttl("k") == pytest.approx(40)
    clock.now = 99
    assert await cache.get("k") == "v"  # from L1
    clock.now = 100
    assert await l1.get("k") is MISSING  # L1 never outlives L2
    assert await cache.get("k") is MISSING


async def test_l1_ttl_caps_the_fill_and_the_write() -> None:
    clock = FakeClock()
    l1, l2 = MemoryCache(timer=clock), MemoryCache(timer=clock)
    cache = TieredCache(l1, l2, l1_ttl=10)
    await l2.set("forever", 1)
    assert await cache.get("forever") == 1
    assert await l1.ttl("forever") == pytest.approx(10)
    await cache.set("w", 2, ttl=300)
    assert await l1.ttl("w") == pytest.approx(10)
    assert await l2.ttl("w") == pytest.approx(300)
    await cache.set("short", 3, ttl=5)
    assert await l1.ttl("short") == pytest.approx(5)


async def test_writes_reach_both_tiers_and_deletes_clear_both() -> None:
    l1, l2 = MemoryCache(), MemoryCache()
    cache = TieredCache(l1, l2)
    await cache.set("a", {"x": 1}, tags=["t"])
    assert await l1.get("a") == {"x": 1}
    assert await l2.get("a") == {"x": 1}
    await cache.set_many({"b": 2, "c": None})
    assert await l1.get_many(["b", "c"]) == {"b": 2, "c": None}
    assert await cache.exists("c")
    assert await cache.delete("b") is True
    assert await l1.get("b") is MISSING
    assert await l2.get("b") is MISSING
    assert await cache.incr("n", 3) == 3
    assert await cache.get("n") == 3
    assert await cache.delete_pattern("[ac]") == 2
    assert await cache.get_many(["a", "c", "n"]) == {"n": 3}
    await cache.set("t1", 1, tags=["tag"])
    assert await cache.invalidate_tags("tag") == 1
    assert await cache.get("t1") is MISSING
    await cache.clear()
    assert len(l1) == len(l2) == 0


async def test_get_many_reads_l1_then_l2_once_and_fills_l1_only_with_l1_ttl() -> None:
    l1, l2 = MemoryCache(), MemoryCache()
    await l1.set("a", 1)
    await l2.set_many({"b": 2, "c": 3})
    cache = TieredCache(l1, l2)
    assert await cache.get_many(["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": 3}
    assert not await l1.exists("b")  # remaining TTLs are unknown without l1_ttl
    capped = TieredCache(MemoryCache(), l2, l1_ttl=30)
    assert await capped.get_many(["b", "c"]) == {"b": 2, "c": 3}
    assert await capped.l1.get_many(["b", "c"]) == {"b": 2, "c": 3}


async def test_get_with_ttl_and_ttl_come_from_the_tiers() -> None:
    clock = FakeClock()
    l1, l2 = MemoryCache(timer=clock), MemoryCache(timer=clock)
    cache = TieredCache(l1, l2)
    await l2.set("k", "v", ttl=50)
    clock.now = 20
    value, remaining = await cache.get_with_ttl("k")
    assert value == "v"
    assert remaining == pytest.approx(30)
    assert await cache.ttl("k") == pytest.approx(30)
    assert await cache.get_with_ttl("none", "d") == ("d", None)


async def test_an_invalidation_during_an_l2_read_keeps_the_value_out_of_l1() -> None:
    release = asyncio.Event()

    class SlowL2(MemoryCache):
        async def get_with_ttl(self, key: str, default: Any = MISSING) -> tuple[Any, float | None]:
            await release.wait()
            return await super().get_with_ttl(key, default)

    channel = LocalInvalidation()
    l1, l2 = MemoryCache(), SlowL2()
    cache = TieredCache(l1, l2, invalidation=channel)
    await l2.set("k", "old")
    reader = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    await channel.publish(InvalidationMessage(origin="elsewhere", keys=("k",)))
    release.set()
    assert await reader == "old"
    assert await l1.get("k") is MISSING


async def test_two_instances_on_one_channel_keep_their_l1s_coherent() -> None:
    channel, l2 = LocalInvalidation(), MemoryCache()
    a = TieredCache(MemoryCache(), l2, invalidation=channel)
    b = TieredCache(MemoryCache(), l2, invalidation=channel)
    await a.set("k", "v1", tags=["t"])
    assert await b.get("k") == "v1"
    assert b.l1.get_nowait("k") == "v1"  # type: ignore[attr-defined]
    await a.set("k", "v2")
    assert a.pending_invalidations == 1  # published in the background, not by set()
    assert await a.wait_published(5)
    assert b.l1.get_nowait("k") is MISSING  # type: ignore[attr-defined]
    assert await b.get("k") == "v2"
    assert await a.get("k") == "v2"  # its own message did not drop its L1
    assert a.l1.get_nowait("k") == "v2"  # type: ignore[attr-defined]
    await b.set("p:1", 1)
    await a.get("p:1")
    await b.delete_pattern("p:*")
    assert await b.wait_published(5)
    assert a.l1.get_nowait("p:1") is MISSING  # type: ignore[attr-defined]
    await a.get("k")
    await b.invalidate_tags("t")
    assert await b.wait_published(5)
    assert len(a.l1) == 0  # type: ignore[arg-type]
    assert a.stats().tier("tiered").evictions >= 2  # b's set and delete_pattern: one message


async def test_stats_list_l1_l2_and_the_tiered_tier() -> None:
    cache = TieredCache(MemoryCache(name="l1"), MemoryCache(name="l2"))
    await cache.set("a", 1)
    await cache.get("a")
    await cache.get("zz")
    stats = cache.stats()
    assert [t.name for t in stats.tiers] == ["l1", "l2", "tiered"]
    assert stats.tier("l1").hits == 1
    assert stats.tier("l2").misses == 1
    assert "TieredCache" in repr(cache)


async def test_decorator_uses_the_l1_fast_path_and_l2_below_it() -> None:
    l1, l2 = MemoryCache(), MemoryCache()
    cache = TieredCache(l1, l2)
    runs = 0

    @cached(cache, ttl=60)
    async def f(x: int) -> int:
        nonlocal runs
        runs += 1
        return x * 2

    assert await f(2) == 4
    assert await f(2) == 4
    assert runs == 1
    await l1.clear()
    assert await f(2) == 4  # from L2, refilling L1
    assert runs == 1
    assert l1.get_nowait(f.key(2)) == 4


# -- over real Redis ---------------------------------------------------------------------


async def test_over_redis_an_l2_hit_fills_l1_with_at_most_the_redis_ttl(
    redis_url: str, namespace: str, closing: list[Cache]
) -> None:
    cache = redis_tiered(redis_url, namespace)
    closing.append(cache)
    await cache.l2.set("k", [1, 2], ttl=5)
    assert await cache.get("k") == [1, 2]
    remaining = await cache.l1.ttl("k")
    assert remaining is not None
    assert 0 < remaining <= 5


async def test_falls_back_to_l1_when_redis_is_down(
    fresh_redis: RedisServer, namespace: str, closing: list[Cache]
) -> None:
    cache = TieredCache(MemoryCache(), RedisCache.from_url(fresh_redis.url, namespace=namespace))
    closing.append(cache)
    await cache.set("k", "v", ttl=60)
    fresh_redis.kill()
    assert await cache.get("k") == "v"
    assert await cache.get("absent", "d") == "d"
    assert await cache.get_many(["k", "absent"]) == {"k": "v"}
    await cache.set("new", 1)  # L1 only while Redis is down
    assert await cache.get("new") == 1
    assert await cache.delete("k") is True
    assert await cache.exists("k") is False
    with pytest.raises(CacheUnavailable):
        await cache.incr("n")
    assert cache.stats().tier("tiered").errors >= 5
    health = await cache.health()
    assert health["status"] == "degraded"
    assert health["l1"]["status"] == "ok"
    assert health["l2"]["status"] != "ok"
    fresh_redis.start()


async def test_health_is_ok_with_redis_and_a_live_channel(
    redis_url: str, namespace: str, closing: list[Cache]
) -> None:
    cache = redis_tiered(redis_url, namespace)
    closing.append(cache)
    health = await cache.health()
    assert health["status"] == "ok"
    assert health["invalidation"] is True


async def test_a_killed_invalidation_link_flushes_l1_and_never_serves_stale(
    fresh_redis: RedisServer, namespace: str, closing: list[Cache]
) -> None:
    reader = redis_tiered(fresh_redis.url, namespace)
    writer = redis_tiered(fresh_redis.url, namespace)
    closing += [reader, writer]
    await writer.set("k", "v1", ttl=300)
    await read_into_l1(reader, "k", "v1")
    assert reader.invalidation is not None
    link = reader.invalidation
    assert isinstance(link, RedisInvalidation)
    reconnects = link.reconnects
    fresh_redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
    await eventually(lambda: reader.get_nowait("k") is MISSING, "L1 flush on link loss")
    await eventually(
        lambda: link.connected and link.reconnects > reconnects, "invalidation reconnect"
    )
    await read_into_l1(reader, "k", "v1")
    await writer.set("k", "v2", ttl=300)
    await eventually(lambda: reader.get_nowait("k") != "v1", "invalidation after reconnect")
    assert await reader.get("k") == "v2"


async def test_a_dead_redis_flushes_l1_and_reconnect_flushes_again(
    fresh_redis: RedisServer, namespace: str, closing: list[Cache]
) -> None:
    cache = redis_tiered(fresh_redis.url, namespace)
    closing.append(cache)
    await cache.set("k", "v1", ttl=300)
    assert cache.get_nowait("k") == "v1"
    fresh_redis.kill()
    await eventually(lambda: cache.get_nowait("k") is MISSING, "L1 flush on link loss")
    assert await cache.get("k") is MISSING  # L2 down, L1 flushed: a miss, never an error
    await cache.set("during", "outage")  # degraded: L1 only
    assert await cache.get("during") == "outage"
    fresh_redis.start()
    assert cache.invalidation is not None
    link = cache.invalidation
    await eventually(lambda: link.connected, "reconnect")
    assert cache.get_nowait("during") is MISSING  # flushed again: may have missed messages


async def test_tiered_over_redis_cluster(
    redis_cluster: Any, namespace: str, closing: list[Cache]
) -> None:
    nodes = redis_cluster.startup_nodes
    a = TieredCache(
        MemoryCache(),
        RedisCache.from_cluster_nodes(nodes, namespace=namespace),
        invalidation=RedisInvalidation([nodes[0]], channel=f"{namespace}:inv"),
    )
    b = TieredCache(
        MemoryCache(),
        RedisCache.from_cluster_nodes(nodes, namespace=namespace),
        invalidation=RedisInvalidation([nodes[1]], channel=f"{namespace}:inv"),
    )
    closing += [a, b]
    await a.start()
    await b.start()
    await a.set("k", "v1", ttl=60)
    await read_into_l1(b, "k", "v1")
    await a.set("k", "v2", ttl=60)
    await eventually(lambda: b.get_nowait("k") is MISSING, "cluster-wide invalidation")
    assert await b.get("k") == "v2"


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from redline.cache.base import MISSING
    from redline.cache.invalidation import RedisInvalidation
    from redline.cache.memory import MemoryCache
    from redline.cache.redis import RedisCache
    from redline.cache.tiered import TieredCache

    async def main(url, namespace):
        cache = TieredCache(
            MemoryCache(),
            RedisCache.from_url(url, namespace=namespace),
            invalidation=RedisInvalidation(url, channel=namespace + ":inv"),
        )
        async with cache:
            first = await cache.get("k")
            print("READY", first, cache.get_nowait("k"), flush=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while cache.get_nowait("k") == first and loop.time() < deadline:
                await asyncio.sleep(0.005)
            print("NOW", await cache.get("k"), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_write_in_one_process_invalidates_l1_in_another(
    redis_url: str, namespace: str, closing: list[Cache]
) -> None:
    cache = redis_tiered(redis_url, namespace)
    closing.append(cache)
    await cache.set("k", "v1", ttl=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        redis_url,
        namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert ready.decode().split() == ["READY", "v1", "v1"]  # the other process holds v1 in L1
        started = time.monotonic()
        await cache.set("k", "v2", ttl=300)
        now = await asyncio.wait_for(proc.stdout.readline(), 30)
        delay = time.monotonic() - started
        assert now.decode().split() == ["NOW", "v2"]
        assert delay < 10  # bounded: a generous "not stuck" check, not a speed assertion
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- read-fills racing writes (deterministic interleavings) ------------------------------


class GatedL2(MemoryCache):
    """An L2 whose calls can be held at chosen points: reads after fetching, writes before
    (``write_gate``) or after (``applied_gate``) they change the data."""

    def __init__(self) -> None:
        super().__init__()
        self.read_gate: asyncio.Event | None = None
        self.write_gate: asyncio.Event | None = None
        self.applied_gate: asyncio.Event | None = None

    async def get_with_ttl(self, key: str, default: Any = MISSING) -> tuple[Any, float | None]:
        found = await super().get_with_ttl(key, default)  # what L2 holds when asked
        if self.read_gate is not None:
            await self.read_gate.wait()
        return found

    async def get_many(self, keys: Any) -> dict[str, Any]:
        found = await super().get_many(keys)
        if self.read_gate is not None:
            await self.read_gate.wait()
        return found

    async def set(self, key: str, value: Any, ttl: float | None = None, *, tags: Any = ()) -> None:
        if self.write_gate is not None:
            await self.write_gate.wait()
        await super().set(key, value, ttl, tags=tags)
        if self.applied_gate is not None:
            await self.applied_gate.wait()

    async def delete(self, key: str) -> bool:
        if self.write_gate is not None:
            await self.write_gate.wait()
        return await super().delete(key)


@pytest.mark.parametrize("write", ["set", "delete"])
@pytest.mark.parametrize("read", ["get", "get_many"])
async def test_a_read_that_fetched_before_a_write_never_fills_l1_after_it(
    write: str, read: str
) -> None:
    """The writer is in L2 when the reader starts; the reader fetched the old value and resumes
    after the writer finished: the old value must not land in L1 over the write."""
    l1, l2 = MemoryCache(), GatedL2()
    cache = TieredCache(l1, l2, l1_ttl=60)
    await l2.set("k", "old")
    l2.write_gate, l2.read_gate = asyncio.Event(), asyncio.Event()
    writer = asyncio.create_task(cache.set("k", "new") if write == "set" else cache.delete("k"))
    await asyncio.sleep(0.01)  # the writer waits in L2
    reader = asyncio.create_task(cache.get("k") if read == "get" else cache.get_many(["k"]))
    await asyncio.sleep(0.01)  # the reader fetched "old" and waits
    l2.write_gate.set()
    await writer
    l2.read_gate.set()
    await reader
    expected = "new" if write == "set" else MISSING
    assert l1.get_nowait("k") in (expected, MISSING)
    assert await cache.get("k") == ("new" if write == "set" else MISSING)
    l2.write_gate = l2.read_gate = None
    assert await cache.get("k") == ("new" if write == "set" else MISSING)


async def test_overlapping_writes_to_one_key_leave_l1_with_l2s_value_or_nothing() -> None:
    """Two sets of one key overlap; the first reaches L2 first but returns last: L1 must not
    keep the first value over the second one that L2 holds."""
    l1, l2 = MemoryCache(), GatedL2()
    cache = TieredCache(l1, l2)
    applied = asyncio.Event()
    l2.applied_gate = applied
    first = asyncio.create_task(cache.set("k", "first"))
    await asyncio.sleep(0.01)  # "first" is in L2; its reply is held
    l2.applied_gate = None
    await cache.set("k", "second")
    applied.set()
    await first
    assert await l2.get("k") == "second"
    assert l1.get_nowait("k") in ("second", MISSING)
    assert await cache.get("k") == "second"


async def test_while_the_link_is_down_l1_keeps_values_only_briefly() -> None:
    channel = LocalInvalidation()
    l1, l2 = MemoryCache(), MemoryCache()
    cache = TieredCache(l1, l2, invalidation=channel, offline_l1_ttl=0.5)
    await cache.start()
    await cache.set("up", 1)
    assert await l1.ttl("up") is None  # link up: as long as L2 keeps it
    await channel.close()  # the link is down
    await cache.set("down", 2)
    await l2.set("filled", 3)
    assert await cache.get("filled") == 3
    for key in ("down", "filled"):
        remaining = await l1.ttl(key)
        assert remaining is not None
        assert remaining <= 0.5
    with pytest.raises(ValueError, match=r"^offline_l1_ttl must be >= 0, got -1$"):
        TieredCache(MemoryCache(), MemoryCache(), offline_l1_ttl=-1)
    lost = LocalInvalidation()
    nothing = TieredCache(MemoryCache(), l2, invalidation=lost, offline_l1_ttl=0)
    await nothing.start()
    await lost.close()
    assert await nothing.get("filled") == 3
    assert nothing.get_nowait("filled") is MISSING


async def test_a_frozen_redis_does_not_stall_writes_on_the_publish(
    fresh_redis: RedisServer, namespace: str, closing: list[Cache]
) -> None:
    """Redis SIGSTOPped: a write pays at most L2's own timeout (until L2's breaker opens),
    never the invalidation publish; the other process's link is counted down and flushed."""
    writer = redis_tiered(fresh_redis.url, namespace)
    reader = redis_tiered(fresh_redis.url, namespace)
    closing += [writer, reader]
    for cache in (writer, reader):
        assert isinstance(cache.invalidation, RedisInvalidation)
        cache.invalidation.ping_interval = 0.25
        cache.invalidation.link_timeout = 0.5
    await writer.set("k", "v1", ttl=300)
    await read_into_l1(reader, "k", "v1")
    assert fresh_redis.proc is not None
    os.kill(fresh_redis.proc.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        flushed_at: list[float] = []

        async def watch() -> None:
            await eventually(lambda: reader.get_nowait("k") is MISSING, "reader's L1 flush", 10)
            flushed_at.append(time.monotonic())

        flushed = asyncio.create_task(watch())
        longest = 0.0
        for i in range(20):
            started = time.monotonic()
            await writer.set("k", f"v{i + 2}", ttl=300)
            longest = max(longest, time.monotonic() - started)
        await flushed
        detected = flushed_at[0] - frozen_at
        # A send that failed is kept (pending, or being retried) for when Redis is back.
        await eventually(
            lambda: writer.stats().tier("tiered").events.get("failure:publish", 0) >= 1,
            "a failed publish",
            10,
        )
        assert not await writer.wait_published(0.3)
    finally:
        os.kill(fresh_redis.proc.pid, signal.SIGCONT)
    print(f"longest write while frozen: {longest * 1000:.0f} ms; flushed after {detected:.2f} s")
    assert longest < 1.5  # L2's own socket timeout (0.5 s) at most; was 4.5 s
    assert await writer.wait_published(10)


def test_the_fill_guard_only_refuses_more_when_it_prunes() -> None:
    from redline.cache._coherence import FillGuard

    guard = FillGuard(max_keys=2)
    since = guard.now()
    stamp = guard.begin_write(["w"])
    assert not guard.may_fill("w", since)  # a write is in flight
    assert guard.may_fill("other", since)
    guard.changed(["a", "b", "c"])  # past max_keys: everything forgotten counts as changed now
    assert not guard.may_fill("other", since)
    assert guard.end_write(["w"], stamp) == []  # its overlap can no longer be ruled out
    later = guard.now()
    assert guard.may_fill("other", later)
    alone = guard.begin_write(["x"])
    assert guard.end_write(["x"], alone) == ["x"]
    guard.begin_global()
    assert not guard.may_fill("x", guard.now())
    guard.end_global()
    assert guard.may_fill("x", guard.now())
    with pytest.raises(ValueError, match=r"^max_keys must be >= 1, got 0$"):
        FillGuard(max_keys=0)
