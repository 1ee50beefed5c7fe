"""RequestPathCache: reads within a budget (late ones fill L1 only under the fill rules),
writes queued behind the caller and bounded, failures counted in a few log lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from redline.cache.memory import MemoryCache
from redline.cache.request_path import RequestPathCache
from redline.cache.tiered import TieredCache
from redline.exceptions import CacheUnavailable


class GatedCache(MemoryCache):
    """A MemoryCache whose reads (and, when told, writes) wait for a gate: a frozen L2."""

    def __init__(self) -> None:
        super().__init__(name="gated")
        self.reads_open = asyncio.Event()
        self.reads_open.set()
        self.writes_open = asyncio.Event()
        self.writes_open.set()
        self.down = False
        self.reads_started = 0
        self.failing: set[str] = set()  # keys whose reads raise
        self.slow: dict[str, float] = {}  # keys whose reads take this long

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        found = await super().get_many(wanted)  # the value as it was when the read was sent
        self.reads_started += 1
        await self.reads_open.wait()
        await asyncio.sleep(max((self.slow.get(key, 0.0) for key in wanted), default=0.0))
        if self.down or self.failing.intersection(wanted):
            raise CacheUnavailable("gated cache is down")
        return found

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        await self.writes_open.wait()
        if self.down:
            raise CacheUnavailable("gated cache is down")
        await super().set_many(mapping, ttl)


async def test_a_read_not_answered_within_the_budget_is_a_miss_and_fills_l1_later() -> None:
    l2 = GatedCache()
    await l2.set_many({"k": "v"})
    tiered = TieredCache(MemoryCache(), l2, l1_ttl=60)
    cache = RequestPathCache(tiered, read_budget=0.02)
    l2.reads_open.clear()  # frozen
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await cache.get_many(["k"]) == {}
    assert loop.time() - started < 1.0  # gave up; the L2 read goes on
    assert cache.request_stats().late_reads == 1
    l2.reads_open.set()
    for _ in range(100):
        if await tiered.l1.get("k", None) == "v":
            break
        await asyncio.sleep(0.01)
    assert await tiered.l1.get("k", None) == "v"
    assert await cache.get_many(["k"]) == {"k": "v"}  # now from L1
    await cache.close()


async def test_a_late_read_never_fills_l1_with_a_value_older_than_a_completed_write() -> None:
    l2 = GatedCache()
    await l2.set_many({"k": "old"})
    tiered = TieredCache(MemoryCache(), l2, l1_ttl=60)
    cache = RequestPathCache(tiered, read_budget=0.02, max_queued=0)
    l2.reads_open.clear()
    assert await cache.get_many(["k"]) == {}  # the read holds "old", still waiting
    assert l2.reads_started == 1
    await cache.set_many({"k": "new"})  # completes: L2 and L1 hold "new"
    l2.reads_open.set()  # the late read answers "old"
    await asyncio.sleep(0.05)
    assert await tiered.l1.get("k", None) != "old"
    assert await cache.get_many(["k"]) == {"k": "new"}
    await cache.close()


async def test_writes_return_at_once_are_read_back_while_queued_and_sent_later() -> None:
    l2 = GatedCache()
    tiered = TieredCache(MemoryCache(), l2, l1_ttl=60)
    cache = RequestPathCache(tiered, read_budget=0.02, max_queued=4)
    l2.writes_open.clear()  # frozen: the writer waits, callers do not
    await asyncio.wait_for(cache.set_many({"a": 1, "b": 2}, ttl=60), 0.5)
    assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}  # from the queue
    assert cache.request_stats().queued == 2
    await cache.set_many({"c": 3, "d": 4, "e": 5})  # 2 + 3 > 4: dropped, not awaited
    assert cache.request_stats().dropped == 3
    assert cache.events.counts()["failure:write queue full"] == 1
    l2.writes_open.set()
    await asyncio.wait_for(cache.flush(), 5)
    assert await l2.get_many(["a", "b"]) == {"a": 1, "b": 2}
    stats = cache.request_stats()
    assert (stats.queued, stats.written) == (0, 2)
    await cache.close()


async def test_close_sends_what_waits() -> None:
    l2 = GatedCache()
    cache = RequestPathCache(l2, read_budget=0.05, max_queued=100)
    for index in range(10):
        await cache.set_many({f"k{index}": index})
    await cache.close()
    assert len(await MemoryCache.get_many(l2, [f"k{i}" for i in range(10)])) == 10


async def test_an_outage_logs_a_few_lines_whatever_the_number_of_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    l2 = GatedCache()
    cache = RequestPathCache(l2, read_budget=0.05, max_queued=10_000)
    await cache.get_many(["warm"])  # answered: ok
    l2.down = True
    with caplog.at_level(logging.INFO, logger="redline.cache.request_path"):
        for index in range(300):
            assert await cache.get_many([f"x{index}"]) == {}
            await cache.set_many({f"x{index}": index})
        await cache.flush()
        l2.down = False
        await cache.get_many(["back"])
        await asyncio.sleep(0)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) <= 5, lines
    assert any("is degraded" in line for line in lines)
    assert any("is ok" in line and "more read failures" in line for line in lines)
    counts = cache.events.counts()
    assert counts["failure:read"] == 300
    assert counts["failure:write"] >= 1
    assert cache.stats().tier("request_path").errors == 300 + 300
    await cache.close()


async def test_a_straggler_does_not_flip_the_state_back() -> None:
    l2 = GatedCache()
    cache = RequestPathCache(l2, read_budget=0.01, max_queued=0)
    await cache.get_many(["warm"])
    assert cache.events.current == "ok"
    l2.failing, l2.slow = {"old"}, {"old": 0.1}
    await cache.get_many(["old"])  # read 2: over budget, fails later
    await cache.get_many(["newer"])  # read 3, sent after it, answers first
    await asyncio.sleep(0.2)
    assert cache.events.counts()["failure:read"] == 1
    assert cache.events.current == "ok"
    assert "state:degraded" not in cache.events.counts()
    await cache.close()


async def test_a_failure_after_an_answer_turns_the_state_degraded_once() -> None:
    l2 = GatedCache()
    cache = RequestPathCache(l2, read_budget=0.05, max_queued=0)
    await cache.get_many(["warm"])
    l2.down = True
    for _ in range(10):
        await cache.get_many(["x"])
    assert cache.events.current == "degraded"
    assert cache.events.counts()["state:degraded"] == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="read_budget"):
        RequestPathCache(MemoryCache(), read_budget=0)
    with pytest.raises(ValueError, match="max_queued"):
        RequestPathCache(MemoryCache(), max_queued=-1)
