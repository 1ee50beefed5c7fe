"""gather_limited: order, bound, laziness, error and cancellation propagation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator

import pytest

from redline.concurrency import gather_limited


class Gauge:
    """Counts how many jobs run at once, and the most ever seen."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.started = 0
        self.cancelled = 0

    async def job(self, value: int, delay: float = 0.001) -> int:
        self.now += 1
        self.started += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(delay)
            return value
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.now -= 1


async def test_results_come_back_in_input_order() -> None:
    gauge = Gauge()
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.01) for _ in range(30)]
    results = await gather_limited([gauge.job(i, d) for i, d in enumerate(delays)], limit=5)
    assert results == list(range(30))


async def test_limit_is_never_exceeded() -> None:
    gauge = Gauge()
    results = await gather_limited((gauge.job(i) for i in range(50)), limit=7)
    assert results == list(range(50))
    assert gauge.peak == 7


async def test_generator_of_callables_is_pulled_lazily() -> None:
    gauge = Gauge()
    pulled = 0

    def factories() -> Iterator[Callable[[], Awaitable[int]]]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            # at most `limit` pulled ahead of what has finished
            assert pulled - (gauge.started - gauge.now) <= 4
            yield lambda i=i: gauge.job(i)  # type: ignore[misc]

    results = await gather_limited(factories(), limit=4)
    assert results == list(range(100))
    assert pulled == 100


async def test_first_error_cancels_the_rest_and_propagates() -> None:
    gauge = Gauge()

    async def boom() -> int:
        await asyncio.sleep(0.01)
        raise KeyError("bad item")

    def work() -> Iterator[Awaitable[int]]:
        yield gauge.job(0, 10)
        yield gauge.job(1, 10)
        yield boom()
        for i in range(3, 100):
            yield gauge.job(i, 10)

    with pytest.raises(KeyError, match="bad item"):
        await gather_limited(work(), limit=3)
    assert gauge.cancelled == 2
    assert gauge.now == 0
    assert gauge.started == 2  # nothing new was started after the failure


async def test_leftover_coroutines_in_a_list_are_closed_on_error() -> None:
    gauge = Gauge()

    async def boom() -> int:
        raise ValueError("early")

    work = [boom(), *(gauge.job(i) for i in range(5))]
    with pytest.raises(ValueError, match="early"):
        await gather_limited(work, limit=1)
    # filterwarnings=error would turn a "never awaited" warning into a failure here
    assert gauge.started == 0


async def test_return_exceptions_puts_errors_in_place() -> None:
    async def maybe(i: int) -> int:
        await asyncio.sleep(0)
        if i % 3 == 0:
            raise ValueError(f"bad {i}")
        return i

    results = await gather_limited([maybe(i) for i in range(7)], limit=2, return_exceptions=True)
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        "bad 0",
        1,
        2,
        "bad 3",
        4,
        5,
        "bad 6",
    ]


async def test_cancelling_the_caller_cancels_all_children() -> None:
    gauge = Gauge()
    outer = asyncio.create_task(gather_limited((gauge.job(i, 10) for i in range(20)), limit=5))
    await asyncio.sleep(0.02)
    assert gauge.now == 5
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert gauge.cancelled == 5
    assert gauge.now == 0


async def test_empty_input_gives_empty_list() -> None:
    assert await gather_limited([], limit=3) == []


@pytest.mark.parametrize("limit", [0, -2])
async def test_limit_below_one_is_rejected(limit: int) -> None:
    with pytest.raises(ValueError, match=f"^limit must be >= 1, got {limit}$"):
        await gather_limited([], limit=limit)


async def test_non_awaitable_is_rejected() -> None:
    with pytest.raises(TypeError, match="takes awaitables or zero-argument async callables"):
        await gather_limited([42], limit=1)  # type: ignore[arg-type]
