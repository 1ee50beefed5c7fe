"""RateLimiter: token bucket on an injected clock, FIFO waiting, validation."""

from __future__ import annotations

import asyncio

import pytest

from redline.concurrency import RateLimiter, RateLimiterStats


class Clock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_starts_full_and_refuses_past_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(10, per=1.0, burst=3, timer=clock)
    assert [limiter.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire() == pytest.approx(0.1)
    assert limiter.try_acquire(2) == pytest.approx(0.2)


def test_refill_follows_the_injected_clock_and_caps_at_capacity() -> None:
    clock = Clock()
    limiter = RateLimiter(5, per=1.0, timer=clock)  # burst defaults to rate
    for _ in range(5):
        assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(0.2)
    clock.advance(0.2)
    assert limiter.try_acquire() == 0.0
    clock.advance(100)
    assert limiter.stats().tokens == pytest.approx(5.0)


def test_rate_per_period() -> None:
    clock = Clock()
    limiter = RateLimiter(60, per=60.0, burst=1, timer=clock)  # one per second
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(1.0)
    clock.advance(0.5)
    assert limiter.try_acquire() == pytest.approx(0.5)


def test_cost_above_capacity_is_rejected() -> None:
    limiter = RateLimiter(10, burst=4)
    with pytest.raises(ValueError, match=r"^cost 5 exceeds the bucket capacity 4$"):
        limiter.try_acquire(5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate must be > 0, got 0"),
        ({"rate": 1, "per": -1}, "per must be > 0, got -1"),
        ({"rate": 1, "burst": 0}, "burst must be > 0, got 0"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_non_positive_cost_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^cost must be > 0, got 0$"):
        RateLimiter(1).try_acquire(0)


async def test_acquire_waits_for_tokens() -> None:
    limiter = RateLimiter(50, per=1.0, burst=1)  # real clock: one token every 20 ms
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert limiter.stats().waiting == 1
    await asyncio.wait_for(waiter, timeout=5)
    stats = limiter.stats()
    assert stats.acquired == 2
    assert stats.waited_seconds_total > 0


async def test_waiters_are_served_first_come_first_served() -> None:
    limiter = RateLimiter(100, per=1.0, burst=5)
    for _ in range(5):
        await limiter.acquire()
    order: list[str] = []

    async def take(name: str, cost: float) -> None:
        await limiter.acquire(cost)
        order.append(name)

    big = asyncio.create_task(take("big", 5))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 1))
    await asyncio.sleep(0)
    # the queue is not jumped by try_acquire either
    assert limiter.try_acquire(1) > 0
    await asyncio.wait_for(asyncio.gather(big, small), timeout=5)
    assert order == ["big", "small"]


async def test_async_with_takes_one_token() -> None:
    clock = Clock()
    limiter = RateLimiter(2, burst=2, timer=clock)
    async with limiter:
        pass
    stats = limiter.stats()
    assert isinstance(stats, RateLimiterStats)
    assert stats.tokens == pytest.approx(1.0)
    assert stats.acquired == 1


async def test_cancelled_waiter_takes_no_tokens() -> None:
    clock = Clock()
    limiter = RateLimiter(1, per=1.0, burst=1, timer=clock)
    assert limiter.try_acquire() == 0.0
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.stats().waiting == 0
    clock.advance(1.0)
    assert limiter.try_acquire() == 0.0


def test_repr_shows_live_state() -> None:
    clock = Clock()
    limiter = RateLimiter(10, burst=4, timer=clock)
    limiter.try_acquire(3)
    assert repr(limiter) == "<RateLimiter 10/1s capacity=4 tokens=1.00 waiting=0>"
