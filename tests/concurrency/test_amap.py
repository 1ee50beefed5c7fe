"""amap: ordered and unordered streaming, sources, early close, flat memory, errors."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from collections.abc import AsyncIterator

import psutil
import pytest

from redline.concurrency import amap


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.cancelled = 0

    async def double(self, value: int, delay: float = 0.0) -> int:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(delay)
            return value * 2
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.now -= 1


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def test_ordered_results_follow_input_order() -> None:
    gauge = Gauge()
    rng = random.Random(3)
    delays = {i: rng.uniform(0, 0.005) for i in range(40)}
    out = [x async for x in amap(lambda i: gauge.double(i, delays[i]), range(40), limit=6)]
    assert out == [i * 2 for i in range(40)]
    assert gauge.peak <= 6


async def test_unordered_yields_as_completed() -> None:
    async def slow_first(i: int) -> int:
        await asyncio.sleep(0.05 if i == 0 else 0)
        return i

    out = [x async for x in amap(slow_first, range(5), limit=5, ordered=False)]
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert out[-1] == 0  # the slow one did not hold the others back


async def test_async_iterable_source_and_sync_func() -> None:
    out = [x async for x in amap(lambda i: i + 1, numbers(10), limit=3)]
    assert out == list(range(1, 11))


async def test_unordered_with_async_source() -> None:
    gauge = Gauge()
    out = [x async for x in amap(gauge.double, numbers(50), limit=4, ordered=False)]
    assert sorted(out) == [i * 2 for i in range(50)]
    assert gauge.peak <= 4


@pytest.mark.parametrize("ordered", [True, False])
async def test_error_propagates_and_cancels_in_flight(ordered: bool) -> None:
    gauge = Gauge()

    async def work(i: int) -> int:
        if i == 3:
            await asyncio.sleep(0.01)
            raise RuntimeError("item 3 failed")
        return await gauge.double(i, 10)

    with pytest.raises(RuntimeError, match="item 3 failed"):
        async for _ in amap(work, range(100), limit=5, ordered=ordered):
            pass
    assert gauge.now == 0
    assert gauge.cancelled == 4


@pytest.mark.parametrize("ordered", [True, False])
async def test_aclose_cancels_in_flight_work(ordered: bool) -> None:
    gauge = Gauge()
    delays = [0, 10, 10, 10, 10, 10, 10]
    stream = amap(lambda i: gauge.double(i, delays[i]), range(7), limit=4, ordered=ordered)
    assert await anext(stream) == 0
    assert gauge.now == 3
    await stream.aclose()  # type: ignore[attr-defined]
    assert gauge.now == 0
    assert gauge.cancelled == 3


async def test_break_cancels_in_flight_work() -> None:
    gauge = Gauge()
    delays = [0, 10, 10, 10]
    async for value in amap(lambda i: gauge.double(i, delays[i]), range(4), limit=4):
        assert value == 0
        break
    for _ in range(20):  # the loop finalizes the abandoned generator on its next turns
        if gauge.now == 0:
            break
        await asyncio.sleep(0.01)
    assert gauge.now == 0
    assert gauge.cancelled == 3


async def test_memory_stays_flat_over_a_million_items() -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    total = 0
    count = 0
    async for value in amap(lambda i: i * 2, range(1_000_000), limit=100):
        total += value
        count += 1
    growth = process.memory_info().rss - before
    assert count == 1_000_000
    assert total == 2 * sum(range(1_000_000))
    assert growth < 30 * 1024 * 1024  # holding 1M results would cost well over 30 MB


async def test_async_calls_keep_a_bounded_window_in_memory() -> None:
    async def identity(i: int) -> int:
        return i

    tracemalloc.start()
    try:
        count = 0
        async for _ in amap(identity, range(30_000), limit=100, ordered=False):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert peak < 5 * 1024 * 1024  # 30k live tasks would need several times 5 MB


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit_is_rejected(limit: int) -> None:
    with pytest.raises(ValueError, match=f"^limit must be >= 1, got {limit}$"):
        amap(lambda i: i, range(3), limit=limit)


def test_non_iterable_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"^amap needs an iterable or async iterable, got int$"):
        amap(lambda i: i, 5)  # type: ignore[call-overload]
