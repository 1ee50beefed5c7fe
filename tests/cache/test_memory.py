"""MemoryCache: TTL with a frozen clock, LRU by count and bytes, mutation safety, tags, stats."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from redline.cache.base import MISSING, Cache
from redline.cache.memory import MemoryCache
from redline.exceptions import WrongValueType


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_memory_cache_implements_the_protocol() -> None:
    assert isinstance(MemoryCache(), Cache)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_entries": 0}, "max_entries must be >= 1, got 0"),
        ({"max_bytes": 0}, "max_bytes must be >= 1 or None, got 0"),
        ({"default_ttl": -1.0}, "default_ttl must be > 0 or None, got -1.0"),
        ({"ttl_jitter": 1.0}, "ttl_jitter must be >= 0 and < 1, got 1.0"),
        ({"ttl_jitter": -0.1}, "ttl_jitter must be >= 0 and < 1, got -0.1"),
    ],
)
def test_bad_arguments_are_rejected_with_exact_messages(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        MemoryCache(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


async def test_set_rejects_a_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match=r"^ttl must be > 0 or None, got 0$"):
        await MemoryCache().set("k", 1, ttl=0)


async def test_entries_expire_with_a_frozen_timer(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    await cache.set("k", "v", ttl=10)
    clock.now += 9.99
    assert await cache.get("k") == "v"
    assert await cache.ttl("k") == pytest.approx(0.01)
    clock.now += 0.01
    assert await cache.get("k") is MISSING
    assert await cache.get("k", "dflt") == "dflt"
    assert not await cache.exists("k")
    assert await cache.ttl("k") is None


async def test_default_ttl_applies_and_none_ttl_never_expires(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock, default_ttl=5)
    await cache.set("short", 1)
    clock.now += 6
    assert await cache.get("short") is MISSING
    forever = MemoryCache(timer=clock)
    await forever.set("k", 1)
    clock.now += 10**9
    assert await forever.get("k") == 1
    assert await forever.ttl("k") is None


async def test_get_with_ttl_reports_remaining_seconds(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    await cache.set("k", [1, 2], ttl=30)
    clock.now += 12
    value, remaining = await cache.get_with_ttl("k")
    assert value == [1, 2]
    assert remaining == pytest.approx(18)
    assert await cache.get_with_ttl("absent", "d") == ("d", None)
    await cache.set("forever", 1)
    assert await cache.get_with_ttl("forever") == (1, None)


async def test_ttl_jitter_spreads_expiry_within_bounds(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock, ttl_jitter=0.2)
    for i in range(200):
        await cache.set(f"k{i}", i, ttl=100)
    ttls = [await cache.ttl(f"k{i}") for i in range(200)]
    assert all(t is not None and 80 <= t <= 120 for t in ttls)
    assert len({round(t, 6) for t in ttls if t is not None}) > 150


async def test_lru_evicts_the_least_recently_used_by_count() -> None:
    cache = MemoryCache(max_entries=3)
    for key in "abc":
        await cache.set(key, key)
    assert await cache.get("a") == "a"  # a is now the most recent
    await cache.set("d", "d")
    assert await cache.get("b") is MISSING
    assert {k for k in "acd" if await cache.exists(k)} == {"a", "c", "d"}
    assert cache.stats().tier("memory").evictions == 1
    assert len(cache) == 3


async def test_lru_evicts_by_approximate_bytes() -> None:
    cache = MemoryCache(max_entries=1000, max_bytes=10_000)
    for i in range(10):
        await cache.set(f"k{i}", b"x" * 2000)
    assert len(cache) < 10
    assert await cache.get("k9") == b"x" * 2000
    assert await cache.get("k0") is MISSING
    assert cache.stats().tier("memory").evictions >= 5


async def test_a_value_bigger_than_max_bytes_is_not_stored() -> None:
    cache = MemoryCache(max_bytes=1000)
    await cache.set("big", b"x" * 5000)
    assert await cache.get("big") is MISSING
    assert len(cache) == 0


async def test_numpy_arrays_count_their_nbytes() -> None:
    cache = MemoryCache(max_bytes=1_000_000)
    await cache.set("a", np.zeros(100_000, dtype=np.float32))  # 400 kB
    await cache.set("b", np.zeros(100_000, dtype=np.float32))
    await cache.set("c", np.zeros(100_000, dtype=np.float32))
    assert await cache.get("a") is MISSING
    assert await cache.exists("c")


async def test_none_is_cached_and_distinct_from_missing() -> None:
    cache = MemoryCache()
    await cache.set("k", None)
    assert await cache.get("k", "dflt") is None
    assert await cache.exists("k")


async def test_mutating_what_was_set_or_got_does_not_corrupt_the_cache() -> None:
    cache = MemoryCache()
    value: dict[str, Any] = {"a": [1, 2], "b": {"c": 3}}
    await cache.set("nested", value)
    value["a"].append(99)
    value["b"]["c"] = -1
    got = await cache.get("nested")
    assert got == {"a": [1, 2], "b": {"c": 3}}
    got["a"].append(100)
    got["new"] = 1
    assert await cache.get("nested") == {"a": [1, 2], "b": {"c": 3}}

    flat = [1, 2, 3]
    await cache.set("flat", flat)
    flat.append(4)
    (await cache.get("flat")).append(5)
    assert await cache.get("flat") == [1, 2, 3]

    mutable_set = {1, 2}
    await cache.set("set", mutable_set)
    mutable_set.add(3)
    assert await cache.get("set") == {1, 2}


async def test_numpy_arrays_are_stored_as_read_only_copies() -> None:
    cache = MemoryCache()
    array = np.arange(4, dtype=np.float32)
    await cache.set("emb", array)
    array[0] = 42
    got = await cache.get("emb")
    assert got.tolist() == [0, 1, 2, 3]
    assert not got.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        got[0] = 7
    with pytest.raises(ValueError):
        got.flags.writeable = True
    assert (await cache.get("emb")).tolist() == [0, 1, 2, 3]


async def test_immutable_values_are_returned_as_is() -> None:
    cache = MemoryCache()
    value = ("a", 1, frozenset({2}))
    await cache.set("t", value)
    assert await cache.get("t") is value


async def test_get_many_returns_only_present_keys_and_set_many_writes_all() -> None:
    cache = MemoryCache()
    await cache.set_many({"a": 1, "b": None}, ttl=10)
    assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": None}


async def test_incr_starts_at_zero_and_rejects_non_ints(clock: FakeClock) -> None:
    cache = MemoryCache(timer=clock)
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 5) == 6
    await cache.set("t", 10, ttl=50)
    clock.now += 20
    assert await cache.incr("t", -3) == 7
    assert await cache.ttl("t") == pytest.approx(30)
    await cache.set("s", "text")
    with pytest.raises(WrongValueType, match=r"^cannot incr 's': its value is a str, not an int$"):
        await cache.incr("s")


async def test_delete_pattern_uses_redis_glob_semantics() -> None:
    cache = MemoryCache()
    for key in ["user:1", "user:2", "user:10", "users", "user:a", "item:1", "h?llo", "hallo"]:
        await cache.set(key, 1)
    assert await cache.delete_pattern("user:?") == 3
    assert await cache.exists("user:10")
    assert await cache.delete_pattern("user:[^1]*") == 0
    assert await cache.delete_pattern("user:[0-9]*") == 1
    assert await cache.delete_pattern("h\\?llo") == 1
    assert await cache.exists("hallo")
    assert await cache.delete_pattern("*") == 3  # users, item:1, hallo


async def test_tags_invalidate_their_entries_and_the_index_is_cleaned() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("a", 1, tags=["t1", "t2"])
    await cache.set("b", 2, tags=["t2"])
    assert await cache.invalidate_tags("t1") == 1
    assert await cache.get("a") is MISSING
    assert await cache.get("b") == 2
    await cache.set("c", 3, tags=["t3"])
    await cache.set("d", 4)  # evicts b
    assert await cache.invalidate_tags("t2") == 0
    assert await cache.invalidate_tags("t3", "missing") == 1
    assert cache._tags == {}


async def test_overwriting_a_key_drops_its_old_tags() -> None:
    cache = MemoryCache()
    await cache.set("a", 1, tags=["old"])
    await cache.set("a", 2)
    assert await cache.invalidate_tags("old") == 0
    assert await cache.get("a") == 2


async def test_delete_clear_stats_health_and_repr() -> None:
    async with MemoryCache(name="l1") as cache:
        await cache.set("a", 1)
        await cache.get("a")
        await cache.get("zz")
        assert await cache.delete("a") is True
        assert await cache.delete("a") is False
        await cache.set("b", 2)
        stats = cache.stats().tier("l1")
        assert (stats.hits, stats.misses, stats.sets, stats.deletes, stats.size) == (1, 1, 2, 1, 1)
        assert "size=1/10000" in repr(cache)
        health = await cache.health()
        assert health["status"] == "ok"
        assert health["size"] == 1
        await cache.clear()
        assert len(cache) == 0
        assert await cache.get("b") is MISSING


async def test_a_dict_with_flat_lists_and_dicts_below_cannot_be_corrupted() -> None:
    cache = MemoryCache()
    original: dict[str, Any] = {"id": 1, "tags": ["a", "b"], "meta": {"k": 1}}
    await cache.set("item", original)
    original["tags"].append("set-side")  # the caller's object is not the cached one
    got = await cache.get("item")
    got["tags"].append("x")
    got["meta"]["k"] = 99
    got["id"] = 2
    again = await cache.get("item")
    assert again == {"id": 1, "tags": ["a", "b"], "meta": {"k": 1}}
    assert again["tags"] is not got["tags"]


async def test_get_all_nowait_reads_all_or_nothing_and_counts_only_what_it_reads(
    clock: FakeClock,
) -> None:
    cache = MemoryCache(timer=clock, max_entries=3)
    await cache.set("a", np.ones(2, np.float32))
    await cache.set("b", [1, 2])
    await cache.set("c", 3, ttl=5)
    assert cache.get_all_nowait(["a", "x"]) is None
    clock.now += 10
    assert cache.get_all_nowait(["a", "c"]) is None  # expired: the usual read drops it
    stats = cache.stats().tiers[0]
    assert (stats.hits, stats.misses, stats.size) == (0, 0, 3)
    await cache.set("c", 3)
    values = cache.get_all_nowait(["b", "a", "b"])
    assert values is not None
    assert values[0] == values[2] == [1, 2]
    assert values[0] is not values[2]
    assert not values[1].flags.writeable
    stats = cache.stats().tiers[0]
    assert (stats.hits, stats.misses) == (2, 0)  # per distinct key, as get_many
    shared = cache.get_all_nowait(["a", "a"], shared=True)
    assert shared is not None
    assert shared[0] is shared[1] is values[1].base  # as stored, not a view of it
    assert (cache.stats().tiers[0].hits, cache.stats().tiers[0].misses) == (3, 0)
    await cache.set("d", 4)  # the reads moved "b" and "a" past "c": "c" is the one evicted
    assert sorted(await cache.get_many(["a", "b", "c", "d"])) == ["a", "b", "d"]
