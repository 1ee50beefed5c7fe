"""DistributedLock and cross-process single-flight, on real Redis and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline.cache.lock import DistributedLock
from redline.cache.redis import RedisCache
from redline.cache.strategies import CacheAside
from redline.exceptions import CacheUnavailable, LockError, LockTimeout
from tests._services import RedisClusterServers, RedisServer

ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_lock_excludes_a_second_holder_until_released(client: Redis) -> None:
    name = unique("lock:{excl}")
    first = DistributedLock(client, name, lease=5.0)
    second = DistributedLock(client, name, lease=5.0)
    assert await first.try_acquire()
    assert not await second.try_acquire()
    assert await first.release()
    assert await second.try_acquire()
    assert await second.release()
    assert second.stats().acquired == 1
    assert second.stats().contended == 1


async def test_release_after_lease_expiry_does_not_delete_the_new_holders_lock(
    client: Redis,
) -> None:
    name = unique("lock:{expire}")
    slow = DistributedLock(client, name, lease=0.2, renew_interval=0.15)
    assert await slow.try_acquire()
    assert slow._renewer is not None
    slow._renewer.cancel()  # a holder that stalled (GC pause, frozen VM): no renewals
    await asyncio.sleep(0.4)
    other = DistributedLock(client, name, lease=5.0)
    assert await other.try_acquire()
    assert await slow.release() is False
    assert await client.exists(name) == 1  # the new holder still has it
    assert slow.stats().lost == 1
    await other.release()


async def test_lease_is_renewed_while_held(client: Redis) -> None:
    name = unique("lock:{renew}")
    lock = DistributedLock(client, name, lease=1.0)
    async with lock:
        await asyncio.sleep(2.5)  # well past the lease
        assert not await DistributedLock(client, name, lease=1.0).try_acquire()
        assert lock.stats().renewals >= 1
    assert await client.exists(name) == 0


async def test_acquire_gives_up_with_lock_timeout(client: Redis) -> None:
    name = unique("lock:{timeout}")
    holder = DistributedLock(client, name, lease=5.0)
    await holder.acquire()
    waiter = DistributedLock(client, name, wait_timeout=0.2)
    with pytest.raises(LockTimeout, match=r"not acquired within 0\.2s"):
        await waiter.acquire()
    assert waiter.stats().timeouts == 1
    await holder.release()


async def test_lock_misuse_is_rejected(client: Redis) -> None:
    with pytest.raises(ValueError, match="lease must be > 0, got 0"):
        DistributedLock(client, "x", lease=0)
    with pytest.raises(ValueError, match=r"renew_interval must be > 0 and < lease \(1.0\), got 2"):
        DistributedLock(client, "x", lease=1.0, renew_interval=2)
    lock = DistributedLock(client, unique("lock:{misuse}"))
    with pytest.raises(LockError, match="is not held by this object"):
        await lock.release()
    assert "unlocked" in repr(lock)


async def test_lock_on_a_dead_redis_raises_cache_unavailable(fresh_redis: RedisServer) -> None:
    redis = Redis.from_url(fresh_redis.url, socket_connect_timeout=0.5)
    fresh_redis.kill()
    with pytest.raises(CacheUnavailable, match="cannot take lock"):
        await DistributedLock(redis, "lock:{dead}").try_acquire()
    await redis.aclose()


def _command_calls(server: RedisServer) -> int:
    total = 0
    for line in server.cli("info", "commandstats").splitlines():
        if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def _spawn(url: str, namespace: str, key: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache._procs.aside_worker", url, namespace, key, *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_1000_cold_callers_in_3_processes_run_the_loader_once(fresh_redis: RedisServer) -> None:
    namespace, key = unique("stampede"), "hot"
    start_at = time.time() + 4.0  # every worker imports first, then all fire together
    before = _command_calls(fresh_redis)
    procs = [
        _spawn(
            fresh_redis.url,
            namespace,
            key,
            "--callers",
            str(n),
            "--start-at",
            str(start_at),
            "--body",
            "1.0",
            "--counter",
            f"{namespace}:count",
            "--loading",
            f"{namespace}:in",
        )
        for n in (334, 333, 333)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    assert sum(r["count"] for r in results) == 1000
    assert [r["errors"] for r in results] == [[], [], []]
    values = {json.dumps(v) for r in results for v in r["values"]}
    assert len(values) == 1  # every caller in every process got the one loaded value
    assert fresh_redis.cli("get", f"{namespace}:count").strip() == "1"
    # Waiting is pub/sub, not polling, and concurrent reads of one key share one round trip:
    # a few dozen commands in all (about 30 measured), not one per caller or per poll.
    commands = _command_calls(fresh_redis) - before
    assert commands < 150, commands


@pytest.mark.slow
async def test_waiter_takes_over_when_the_lock_holder_is_killed(redis_url: str) -> None:
    namespace, key = unique("killed"), "report"
    holder = _spawn(
        redis_url,
        namespace,
        key,
        "--body",
        "60",
        "--lease",
        "1.0",
        "--counter",
        f"{namespace}:count",
        "--loading",
        f"{namespace}:in",
    )
    raw = Redis.from_url(redis_url)
    cache = RedisCache.from_url(redis_url, namespace=namespace)
    try:
        for _ in range(300):  # the holder is inside the loader body, lock taken
            if await raw.exists(f"{namespace}:in"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(
                "worker never started loading: " + holder.stderr.read() if holder.stderr else ""
            )
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)

        calls = 0

        async def loader() -> str:
            nonlocal calls
            calls += 1
            return "from the waiter"

        aside = CacheAside(cache, lock=True, lock_lease=1.0, lock_wait_timeout=20.0)
        assert await aside.get(key, loader, ttl=60) == "from the waiter"
        assert calls == 1
        assert await raw.get(f"{namespace}:count") == b"1"  # the dead holder's body, never finished
    finally:
        holder.kill()
        await raw.aclose()
        await cache.close()


async def test_cross_process_single_flight_on_redis_cluster(
    redis_cluster: RedisClusterServers,
) -> None:
    namespace = unique("cl")
    caches = [
        RedisCache.from_cluster_nodes(redis_cluster.startup_nodes, namespace=namespace)
        for _ in range(2)
    ]
    # Two CacheAside objects stand for two processes: no shared in-process single-flight.
    asides = [CacheAside(c, lock=True, lock_lease=2.0) for c in caches]
    calls = 0

    async def loader() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return {"n": 7}

    try:
        results = await asyncio.gather(*(asides[i % 2].get("k", loader, ttl=30) for i in range(40)))
        assert results == [{"n": 7}] * 40
        assert calls == 1
        assert sum(a.stats().coalesced for a in asides) == 38
    finally:
        for c in caches:
            await c.close()


async def test_cluster_lock_excludes_across_clients(cluster_client: RedisCluster) -> None:
    name = unique("redline:lock:{cl}")
    first = DistributedLock(cluster_client, name, lease=2.0)
    assert await first.try_acquire()
    assert not await DistributedLock(cluster_client, name).try_acquire()
    assert await first.release()
    assert await cluster_client.exists(name) == 0
    second = DistributedLock(cluster_client, name)
    assert await second.try_acquire()  # released: another holder takes it at once
    assert await second.release()


async def test_waiter_gives_up_with_lock_timeout_while_the_holder_is_alive(redis_url: str) -> None:
    namespace = unique("wait")
    cache = RedisCache.from_url(redis_url, namespace=namespace)
    name = f"{namespace}:lock:{{k}}"
    holder = DistributedLock(cache.client, name, lease=1.0)
    assert await holder.try_acquire()  # alive: renews its lease while the waiter waits
    calls = 0

    async def loader() -> str:
        nonlocal calls
        calls += 1
        return "never"

    try:
        waiter = DistributedLock(cache.client, name, lease=1.0, wait_timeout=1.5)
        with pytest.raises(LockTimeout, match=r"no value for lock .* within 1\.5s"):
            await CacheAside(cache).get("k", loader, lock=waiter)
        assert calls == 0
        assert waiter.stats().timeouts == 1
    finally:
        await holder.release()
        await cache.close()
