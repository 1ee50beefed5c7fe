"""XFetch early refresh: one caller recomputes a hot key early, the rest get the old value."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

import pytest

from redline.cache.early_refresh import Envelope, should_refresh, unwrap, wrap
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.strategies import CacheAside

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_envelope_round_trips_and_plain_values_are_not_envelopes() -> None:
    raw = wrap({"a": 1}, delta=0.5, expires_at=2000.0)
    assert unwrap(raw) == Envelope({"a": 1}, 0.5, 2000.0)
    assert unwrap({"a": 1}) is None
    assert unwrap("text") is None


def test_xfetch_refreshes_earlier_for_slow_recomputes_and_near_expiry() -> None:
    envelope = Envelope("v", delta=1.0, expires_at=100.0)
    rand = math.exp(-1)  # -log(rand) == 1: the gap is exactly delta * beta
    assert should_refresh(envelope, now=99.0, beta=1.0, rand=rand)
    assert not should_refresh(envelope, now=98.9, beta=1.0, rand=rand)
    assert should_refresh(envelope, now=98.0, beta=2.0, rand=rand)  # larger beta: earlier
    assert should_refresh(envelope, now=100.0, beta=0.0, rand=0.9)  # expired is always due
    with pytest.raises(ValueError, match="beta must be >= 0, got -1"):
        should_refresh(envelope, now=0, beta=-1, rand=0.5)


class GatedLoader:
    """A loader whose first call takes *cost* (fake) seconds; later calls wait for *gate*."""

    def __init__(self, clock: Clock, cost: float) -> None:
        self.clock = clock
        self.cost = cost
        self.calls = 0
        self.gate = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.clock.now += self.cost
        else:
            await self.gate.wait()
        return f"v{self.calls}"


async def test_hot_key_is_recomputed_once_before_expiry_while_others_get_the_old_value() -> None:
    clock = Clock()
    cache = MemoryCache(timer=clock)
    aside = CacheAside(cache, ttl=60, early_refresh=1.0, clock=clock, rand=lambda: 0.5)
    loader = GatedLoader(clock, cost=2.0)  # delta = 2 s
    assert await aside.get("hot", loader) == "v1"  # stored at t=1002, expires at 1062
    clock.now = 1030.0  # far from expiry: 2 * ln 2 = 1.4 s of head start is not enough
    assert await aside.get("hot", loader) == "v1"
    assert loader.calls == 1

    clock.now = 1061.0  # 1 s before expiry: inside the head start
    refresher = asyncio.create_task(aside.get("hot", loader))
    await asyncio.sleep(0.01)
    assert loader.calls == 2  # one caller is recomputing...
    others = await asyncio.gather(*(aside.get("hot", loader) for _ in range(50)))
    assert others == ["v1"] * 50  # ...and everyone else keeps the old value meanwhile
    loader.gate.set()
    assert await refresher == "v2"
    assert await aside.get("hot", loader) == "v2"
    assert loader.calls == 2
    assert aside.stats().early_refreshes == 1


async def test_failed_early_refresh_keeps_serving_the_old_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    aside = CacheAside(
        MemoryCache(timer=clock), ttl=60, early_refresh=1.0, clock=clock, rand=lambda: 0.5
    )

    async def slow_old() -> str:
        clock.now += 1.0  # delta = 1 s: a refresh is due well before expiry
        return "old"

    assert await aside.get("k", slow_old) == "old"
    clock.now += 59.9

    async def broken() -> str:
        raise RuntimeError("backend flaked")

    assert await aside.get("k", broken) == "old"
    assert "early refresh failed: 'k': RuntimeError: backend flaked" in caplog.text
    assert aside.stats().early_refreshes == 0


async def test_across_processes_only_the_lock_holder_refreshes(redis_url: str) -> None:
    namespace = f"xf-{uuid.uuid4().hex[:8]}"
    caches = [RedisCache.from_url(redis_url, namespace=namespace) for _ in range(2)]
    clock = Clock(2000.0)
    # Two CacheAside objects = two processes sharing Redis; rand 1e-9: both want to refresh.
    asides = [
        CacheAside(c, ttl=60, lock=True, early_refresh=1.0, clock=clock, rand=lambda: 1e-9)
        for c in caches
    ]
    loader = GatedLoader(clock, cost=0.5)
    try:
        assert await asides[0].get("k", loader) == "v1"  # expires at 2060.5
        clock.now = 2055.0  # head start 0.5 * -ln(1e-9) = 10.4 s: due in both "processes"
        refresher = asyncio.create_task(asides[0].get("k", loader))
        await asyncio.sleep(0.05)
        assert loader.calls == 2
        assert await asides[1].get("k", loader) == "v1"  # lock taken: old value, no recompute
        loader.gate.set()
        assert await refresher == "v2"
        assert await asides[1].get("k", loader) == "v2"
        assert loader.calls == 2
    finally:
        for c in caches:
            await c.close()
