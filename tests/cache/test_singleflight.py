"""SingleFlight: one execution per key for concurrent callers; errors shared; cancellation."""

from __future__ import annotations

import asyncio

import pytest

from redline.cache.singleflight import SingleFlight, SingleFlightStats


async def test_hundred_concurrent_callers_share_one_execution() -> None:
    flight = SingleFlight()
    runs = 0
    release = asyncio.Event()

    async def load() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "value"

    tasks = [asyncio.create_task(flight.do("k", load)) for _ in range(100)]
    await asyncio.sleep(0)
    assert flight.in_flight("k")
    release.set()
    assert await asyncio.gather(*tasks) == ["value"] * 100
    assert runs == 1
    assert flight.stats() == SingleFlightStats(calls=100, executions=1, shared=99, in_flight=0)
    assert not flight.in_flight("k")


async def test_different_keys_run_separately_and_later_calls_run_again() -> None:
    flight = SingleFlight()
    runs: list[str] = []

    async def load(key: str) -> str:
        runs.append(key)
        await asyncio.sleep(0)
        return key.upper()

    assert await asyncio.gather(
        flight.do("a", lambda: load("a")), flight.do("b", lambda: load("b"))
    ) == [
        "A",
        "B",
    ]
    assert await flight.do("a", lambda: load("a")) == "A"
    assert runs == ["a", "b", "a"]


async def test_an_exception_is_shared_by_every_waiter() -> None:
    flight = SingleFlight()
    runs = 0

    async def fail() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("backend exploded")

    results = await asyncio.gather(
        *(flight.do("k", fail) for _ in range(10)), return_exceptions=True
    )
    assert runs == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "backend exploded" for r in results)

    async def ok() -> int:
        return 5

    assert await flight.do("k", ok) == 5  # the failure is not remembered


async def test_cancelling_one_waiter_does_not_cancel_the_shared_work() -> None:
    flight = SingleFlight()
    release = asyncio.Event()
    finished = False

    async def load() -> int:
        nonlocal finished
        await release.wait()
        finished = True
        return 42

    first = asyncio.create_task(flight.do("k", load))
    second = asyncio.create_task(flight.do("k", load))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == 42
    assert finished


async def test_when_every_waiter_is_cancelled_the_work_is_cancelled() -> None:
    flight = SingleFlight()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def load() -> int:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    waiters = [asyncio.create_task(flight.do("k", load)) for _ in range(3)]
    await started.wait()
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.wait_for(cancelled.wait(), 10)
    assert not flight.in_flight("k")

    async def fresh() -> int:
        return 2

    assert await flight.do("k", fresh) == 2  # a new caller is not handed the cancelled work


async def test_repr_shows_live_state() -> None:
    flight = SingleFlight()
    release = asyncio.Event()

    async def load() -> None:
        await release.wait()

    task = asyncio.create_task(flight.do("k", load))
    await asyncio.sleep(0)
    assert "in_flight=1" in repr(flight)
    release.set()
    await task
    assert "in_flight=0" in repr(flight)
