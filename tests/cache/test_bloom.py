"""Bloom filters: sizing, no false negatives, measured false-positive rate, rebuild."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline.cache.bloom import BloomFilter, RedisBloomFilter, bloom_parameters
from redline.exceptions import CacheUnavailable
from tests._services import RedisServer


def test_parameters_are_the_textbook_optimum() -> None:
    bits, hashes = bloom_parameters(1_000_000, 0.01)
    assert bits == math.ceil(-1_000_000 * math.log(0.01) / math.log(2) ** 2) == 9_585_059
    assert hashes == 7


@pytest.mark.parametrize(
    ("capacity", "error_rate", "message"),
    [
        (0, 0.01, "capacity must be an int >= 1, got 0"),
        (10, 0.0, r"error_rate must be between 0 and 1 \(exclusive\), got 0.0"),
        (10, 1.5, r"error_rate must be between 0 and 1 \(exclusive\), got 1.5"),
    ],
)
def test_bad_sizes_are_rejected(capacity: int, error_rate: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BloomFilter(capacity, error_rate)


def test_in_process_filter_has_no_false_negatives_and_the_configured_error_rate() -> None:
    capacity, rate = 20_000, 0.01
    bloom = BloomFilter(capacity, rate)
    members = [f"user:{i}" for i in range(capacity)]
    bloom.add_many(members)
    assert all(m in bloom for m in members)
    probes = 100_000
    false_positives = sum(bloom.contains(f"absent:{i}") for i in range(probes))
    assert false_positives / probes <= rate * 1.5
    assert false_positives > 0  # it really is a probabilistic filter at capacity
    assert abs(len(bloom) - capacity) < capacity * 0.05
    assert "capacity=20000" in repr(bloom)


def test_positions_are_stable_across_processes() -> None:
    # Fixed expectation: BLAKE2b, not the per-process salted hash().
    bloom = BloomFilter(100, 0.01)
    bloom.add("stable")
    assert bloom.bits_set() == bloom.hashes
    again = BloomFilter(100, 0.01)
    again.add("stable")
    assert again._array == bloom._array


def test_rebuild_drops_keys_that_are_gone() -> None:
    bloom = BloomFilter(1000, 0.001)
    bloom.add_many(["a", "b", "c"])
    bloom.rebuild(["b", "c", "d"])
    assert "a" not in bloom
    assert all(k in bloom for k in ("b", "c", "d"))
    bloom.clear()
    assert "b" not in bloom
    assert len(bloom) == 0


async def _check_redis_filter(bloom: RedisBloomFilter) -> None:
    capacity = bloom.capacity
    members = [f"m:{i}" for i in range(capacity)]
    await bloom.add_many(members)
    assert all(await bloom.contains_many(members))
    assert await bloom.contains(members[0])
    probes = 20_000
    answers = await bloom.contains_many(f"absent:{i}" for i in range(probes))
    assert sum(answers) / probes <= bloom.error_rate * 1.5
    assert abs(await bloom.count() - capacity) < capacity * 0.1
    # Rotate: build the new set aside, swap atomically.
    await bloom.rebuild(["new:1", "new:2"])
    assert await bloom.contains_many(["new:1", "new:2", members[0]]) == [True, True, False]
    await bloom.rebuild([])
    assert not await bloom.contains("new:1")
    await bloom.add("x")
    assert await bloom.contains("x")
    await bloom.clear()
    assert not await bloom.contains("x")


async def test_redis_filter_on_standalone_redis(client: Redis) -> None:
    bloom = RedisBloomFilter(
        client, f"users-{uuid.uuid4().hex[:8]}", capacity=3000, error_rate=0.02
    )
    await _check_redis_filter(bloom)


async def test_redis_filter_on_redis_cluster(cluster_client: RedisCluster) -> None:
    bloom = RedisBloomFilter(cluster_client, f"users-{uuid.uuid4().hex[:8]}", 2000, 0.02)
    assert bloom.key.startswith("{users-")  # bitmap and its build key share one slot
    await _check_redis_filter(bloom)


async def test_redis_filter_shares_bits_with_the_in_process_layout(client: Redis) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    writer = RedisBloomFilter(client, name, 500, 0.01)
    reader = RedisBloomFilter(client, name, 500, 0.01)  # another process, same name
    await writer.add("k1")
    assert await reader.contains("k1")
    assert await client.bitcount(writer.key) == BloomFilter(500, 0.01).hashes


def test_redis_filter_name_must_not_carry_braces(client: Redis) -> None:
    with pytest.raises(ValueError, match="name must be non-empty and contain no braces"):
        RedisBloomFilter(client, "a{b}", 10)


async def test_redis_filter_on_a_dead_redis_raises_cache_unavailable(
    fresh_redis: RedisServer,
) -> None:
    redis = Redis.from_url(fresh_redis.url, socket_connect_timeout=0.5)
    fresh_redis.kill()
    with pytest.raises(CacheUnavailable, match="bloom filter"):
        await RedisBloomFilter(redis, "dead", 10).contains("x")
    await redis.aclose()


async def test_concurrent_contains_calls_share_round_trips_and_answer_each_key(
    client: Redis,
) -> None:
    bloom = RedisBloomFilter(client, f"burst-{uuid.uuid4().hex[:8]}", 5000, 0.001)
    await bloom.add_many(f"in:{i}" for i in range(1500))
    keys = [f"in:{i}" for i in range(1500)] + [f"out:{i}" for i in range(1500)]
    answers = await asyncio.gather(*(bloom.contains(k) for k in keys))  # > one pipeline chunk
    assert all(answers[:1500])
    assert sum(answers[1500:]) <= 10  # 0.1% false positives, with room
