"""RedisRateLimiter against real Redis and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline.concurrency import RedisRateLimiter
from redline.exceptions import CacheUnavailable, RateLimited
from tests._services import RedisServer

Client = Redis | RedisCluster
ClientFactory = Callable[[], Client]


@pytest.fixture(params=["standalone", "cluster"])
async def make_client(
    request: pytest.FixtureRequest,
) -> AsyncIterator[ClientFactory]:
    """Builds independent clients (think: separate replicas) for one Redis deployment."""
    clients: list[Client] = []
    if request.param == "standalone":
        url: str = request.getfixturevalue("redis_url")

        def factory() -> Client:
            client: Client = Redis.from_url(url)
            clients.append(client)
            return client
    else:
        cluster: Any = request.getfixturevalue("redis_cluster")

        def factory() -> Client:
            client: Client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
            clients.append(client)
            return client

    yield factory
    for client in clients:
        await client.aclose()


def unique_key() -> str:
    return f"test:rl:{uuid.uuid4().hex}"


async def test_two_limiters_sharing_a_key_hold_one_global_rate(
    make_client: ClientFactory,
) -> None:
    key = unique_key()
    # one token a minute: refill during the test is negligible, so exactly `burst` pass
    first = RedisRateLimiter(make_client(), key, rate=1, per=60, burst=5)
    second = RedisRateLimiter(make_client(), key, rate=1, per=60, burst=5)
    # Warm both clients first: redis-py's async RedisCluster races when a cold client gets
    # concurrent first commands (it may fail or retry a command it already sent).
    await first.reset()
    await second.reset()
    waits = await asyncio.gather(
        *(limiter.try_acquire() for _ in range(10) for limiter in (first, second))
    )
    assert sum(1 for w in waits if w == 0.0) == 5
    refused = [w for w in waits if w > 0]
    assert len(refused) == 15
    assert all(0 < w <= 60.0 for w in refused)
    await first.reset()


async def test_try_acquire_returns_retry_after(make_client: ClientFactory) -> None:
    limiter = RedisRateLimiter(make_client(), unique_key(), rate=2, per=1.0, burst=2)
    assert await limiter.try_acquire(2) == 0.0
    wait = await limiter.try_acquire(1)
    assert 0.3 < wait <= 0.5  # one token refills in 0.5 s
    await limiter.reset()


async def test_acquire_waits_then_succeeds(make_client: ClientFactory) -> None:
    limiter = RedisRateLimiter(make_client(), unique_key(), rate=20, per=1.0, burst=1)
    await limiter.acquire()
    await asyncio.wait_for(limiter.acquire(), timeout=5)  # ~50 ms for the next token
    await asyncio.wait_for(limiter.acquire(max_wait=2.0), timeout=5)  # within max_wait
    assert "acquired=3" in repr(limiter)
    await limiter.reset()


async def test_acquire_past_max_wait_raises_rate_limited(make_client: ClientFactory) -> None:
    limiter = RedisRateLimiter(make_client(), unique_key(), rate=1, per=10, burst=1)
    await limiter.acquire()
    with pytest.raises(RateLimited, match="exceeded; retry after") as info:
        await limiter.acquire(max_wait=0.1)
    assert 5 < info.value.retry_after <= 10
    await limiter.reset()


async def test_keys_on_many_slots_work(make_client: ClientFactory) -> None:
    client = make_client()
    limiters = [RedisRateLimiter(client, unique_key(), rate=1, per=60, burst=1) for _ in range(8)]
    assert [await limiter.try_acquire() for limiter in limiters] == [0.0] * 8
    assert all([await limiter.try_acquire() > 0 for limiter in limiters])
    for limiter in limiters:
        await limiter.reset()


async def test_key_expires_once_the_bucket_would_be_full(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        key = unique_key()
        limiter = RedisRateLimiter(client, key, rate=10, per=1.0, burst=10)
        await limiter.try_acquire()
        ttl_ms = await client.pttl(key)
        assert 0 < ttl_ms <= 2000  # refill time (1 s) plus a second of slack
    finally:
        await client.aclose()


async def test_cost_above_capacity_is_rejected(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        limiter = RedisRateLimiter(client, unique_key(), rate=10, burst=3)
        with pytest.raises(ValueError, match=r"^cost 4 exceeds the bucket capacity 3$"):
            await limiter.try_acquire(4)
    finally:
        await client.aclose()


async def test_redis_down_raises_cache_unavailable(fresh_redis: RedisServer) -> None:
    client = Redis.from_url(fresh_redis.url, socket_connect_timeout=0.5, retry=None)
    try:
        limiter = RedisRateLimiter(client, unique_key(), rate=10)
        assert await limiter.try_acquire() == 0.0
        fresh_redis.kill()
        with pytest.raises(CacheUnavailable, match="Redis unavailable"):
            await limiter.try_acquire()
        with pytest.raises(CacheUnavailable):
            await limiter.acquire()
        fresh_redis.start()
        assert await limiter.try_acquire() == 0.0  # recovers when Redis is back
    finally:
        await client.aclose()


async def test_redis_command_errors_are_translated(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        key = unique_key()
        await client.set(key, "not a bucket")  # WRONGTYPE for the script's HMGET
        limiter = RedisRateLimiter(client, key, rate=10)
        with pytest.raises(CacheUnavailable, match="Redis refused the command") as info:
            await limiter.try_acquire()
        assert "WRONGTYPE" in str(info.value.__cause__)
        await client.delete(key)
    finally:
        await client.aclose()


def test_bad_key_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^key must be a non-empty string$"):
        RedisRateLimiter(None, "", rate=1)  # type: ignore[arg-type]
