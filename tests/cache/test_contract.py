"""One contract every backend keeps: memory, Redis, Redis Cluster, tiered (memory + Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redline.cache.base import MISSING, Cache, CacheStats
from redline.exceptions import WrongValueType

VALUES: list[Any] = [
    0,
    -7,
    2**40,
    1.5,
    "text",
    "",
    True,
    False,
    [1, "two", None],
    {"nested": {"list": [1, 2.5]}, "flag": True},
    b"\x00raw bytes\xff",
]


async def test_a_backend_implements_the_cache_protocol(cache: Cache) -> None:
    assert isinstance(cache, Cache)


async def test_get_of_an_absent_key_is_missing_or_the_default(cache: Cache) -> None:
    assert await cache.get("absent") is MISSING
    assert await cache.get("absent", "fallback") == "fallback"
    assert await cache.get("absent", None) is None


@pytest.mark.parametrize("value", VALUES, ids=repr)
async def test_set_then_get_returns_an_equal_value_of_the_same_type(
    cache: Cache, value: Any
) -> None:
    await cache.set("k", value)
    got = await cache.get("k")
    assert got == value
    assert type(got) is type(value)


async def test_none_is_a_cached_value_not_a_miss(cache: Cache) -> None:
    await cache.set("nothing", None)
    assert await cache.get("nothing", "default") is None
    assert await cache.exists("nothing")


async def test_set_overwrites(cache: Cache) -> None:
    await cache.set("k", "first")
    await cache.set("k", "second")
    assert await cache.get("k") == "second"


async def test_delete_reports_whether_the_key_was_there(cache: Cache) -> None:
    await cache.set("k", 1)
    assert await cache.exists("k")
    assert await cache.delete("k") is True
    assert await cache.exists("k") is False
    assert await cache.get("k") is MISSING
    assert await cache.delete("k") is False


async def test_incr_starts_at_zero_and_get_returns_an_int(cache: Cache) -> None:
    assert await cache.incr("counter") == 1
    assert await cache.incr("counter", 5) == 6
    assert await cache.incr("counter", -2) == 4
    got = await cache.get("counter")
    assert got == 4
    assert type(got) is int


async def test_incr_works_on_an_int_set_with_set(cache: Cache) -> None:
    await cache.set("n", 41)
    assert await cache.incr("n") == 42
    assert await cache.get("n") == 42


async def test_incr_of_a_non_integer_value_is_a_type_error(cache: Cache) -> None:
    await cache.set("s", "not a number")
    with pytest.raises(WrongValueType, match="cannot incr 's'") as raised:
        await cache.incr("s")
    assert isinstance(raised.value, TypeError)  # still a TypeError for older callers


async def test_set_many_and_get_many_leave_absent_keys_out(cache: Cache) -> None:
    await cache.set_many({"a": 1, "b": {"x": 2}, "c": None})
    assert await cache.get_many(["a", "b", "c", "zzz"]) == {"a": 1, "b": {"x": 2}, "c": None}
    assert await cache.get_many([]) == {}


async def test_keys_expire_after_their_ttl(cache: Cache) -> None:
    # TTLs long enough that a stalled, busy machine still reads before expiry
    await cache.set("short", "v", ttl=1.0)
    await cache.set_many({"m1": 1, "m2": 2}, ttl=1.0)
    await cache.set("long", "v", ttl=60)
    remaining = await cache.ttl("short")
    assert remaining is not None
    assert 0 < remaining <= 1.0
    assert await cache.get("short") == "v"
    await asyncio.sleep(1.6)
    assert await cache.get("short") is MISSING
    assert await cache.exists("short") is False
    assert await cache.get_many(["m1", "m2"]) == {}
    assert await cache.get("long") == "v"


async def test_ttl_is_none_without_expiry_or_for_an_absent_key(cache: Cache) -> None:
    await cache.set("forever", 1)
    assert await cache.ttl("forever") is None
    assert await cache.ttl("absent") is None


async def test_a_ttl_that_is_not_positive_is_a_value_error(cache: Cache) -> None:
    with pytest.raises(ValueError, match="ttl must be > 0 or None, got 0"):
        await cache.set("k", 1, ttl=0)


async def test_delete_pattern_deletes_only_matching_keys(cache: Cache) -> None:
    await cache.set_many({f"user:{i}": i for i in range(30)})
    await cache.set("session:1", "s")
    assert await cache.delete_pattern("user:*") == 30
    assert await cache.get("user:7") is MISSING
    assert await cache.get("session:1") == "s"
    assert await cache.delete_pattern("user:*") == 0


async def test_invalidate_tags_deletes_every_tagged_key(cache: Cache) -> None:
    await cache.set("p1", 1, tags=["product", "page:1"])
    await cache.set("p2", 2, tags=["product"])
    await cache.set("p3", 3, tags=["page:1"])
    await cache.set("other", 4)
    assert await cache.invalidate_tags("product") == 2
    assert await cache.get("p1") is MISSING
    assert await cache.get("p2") is MISSING
    assert await cache.get("p3") == 3
    assert await cache.invalidate_tags("page:1", "unknown") == 1
    assert await cache.get("other") == 4


async def test_clear_empties_the_cache(cache: Cache) -> None:
    await cache.set_many({f"k{i}": i for i in range(20)})
    await cache.set("tagged", 1, tags=["t"])
    await cache.clear()
    assert await cache.get_many([f"k{i}" for i in range(20)]) == {}
    assert await cache.invalidate_tags("t") == 0


async def test_stats_count_hits_misses_and_sets(cache: Cache) -> None:
    before = cache.stats()
    await cache.set("k", 1)
    await cache.get("k")
    await cache.get("absent")
    after = cache.stats()
    assert isinstance(after, CacheStats)
    assert after.sets > before.sets
    assert after.hits > before.hits
    assert after.misses > before.misses
    assert after.errors == 0


async def test_the_cache_is_an_async_context_manager(cache: Cache) -> None:
    async with cache as entered:
        assert entered is cache
        await cache.set("k", "v")
        assert await cache.get("k") == "v"


async def test_health_reports_ok(cache: Cache) -> None:
    report = await cache.health()
    assert report["status"] == "ok"


async def test_concurrent_gets_each_get_their_own_value(cache: Cache) -> None:
    await cache.set_many({f"c{i}": i for i in range(50)})
    keys = [f"c{i % 60}" for i in range(300)]
    got = await asyncio.gather(*(cache.get(key) for key in keys))
    assert got == [i % 60 if i % 60 < 50 else MISSING for i in range(300)]
