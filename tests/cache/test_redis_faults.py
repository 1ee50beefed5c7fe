"""Standalone Redis killed or frozen (SIGSTOP) under concurrent load: reads give up fast, the
breaker opens within a few calls, an outage logs a handful of lines, and the cache-aside
protections (single-flight, the distributed lock, Bloom filter, negative caching) keep
answering, correctly, within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from redline.cache._redis_connection import BreakerAwareConnection
from redline.cache.base import MISSING
from redline.cache.bloom import RedisBloomFilter
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.cache.redis import RedisCache
from redline.cache.strategies import CacheAside
from redline.exceptions import CacheUnavailable
from tests._faultproxy import FaultProxy
from tests._services import HOST, RedisServer

SOCKET_TIMEOUT = 0.5  # RedisCache.from_url's default


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """SIGSTOP *server* (it keeps its sockets but answers nothing), SIGCONT it after."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)


@pytest.fixture
async def cache(fresh_redis: RedisServer, namespace: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_url(
        fresh_redis.url,
        namespace=namespace,
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout=1.0, name="redis"),
    )
    yield cache
    await cache.close()


async def timed(call: Any) -> tuple[float, Any]:
    """``(seconds, result or the exception)`` of ``await call``."""
    started = time.monotonic()
    try:
        result = await call
    except Exception as exc:
        result = exc
    return time.monotonic() - started, result


@pytest.fixture(params=["by_failures", "by_stall"])
async def any_cache(
    request: pytest.FixtureRequest, fresh_redis: RedisServer, namespace: str
) -> AsyncIterator[RedisCache]:
    """The cache with a breaker opened by 3 failures only, or with RedisCache's own: 3
    failures or 0.25 s of silence."""
    breaker = None
    if request.param == "by_failures":
        breaker = CircuitBreaker(failure_threshold=3, reset_timeout=1.0, name="redis")
    cache = RedisCache.from_url(fresh_redis.url, namespace=namespace, breaker=breaker)
    yield cache
    await cache.close()


async def test_concurrent_calls_on_a_frozen_redis_give_up_together_when_the_breaker_opens(
    any_cache: RedisCache, fresh_redis: RedisServer
) -> None:
    cache = any_cache
    await cache.set("k", 1)
    with frozen(fresh_redis):
        started = time.monotonic()

        async def staggered(i: int) -> tuple[float, Any]:
            await asyncio.sleep(i * 0.002)  # arrivals spread over 0.6 s, as requests come
            call = cache.set(f"k{i}", i) if i % 2 else cache.get(f"k{i}")
            return await timed(call)

        results = await asyncio.gather(*(staggered(i) for i in range(300)))
        took = time.monotonic() - started
    assert all(isinstance(result, CacheUnavailable) for _, result in results)
    slowest = max(seconds for seconds, _ in results)
    waited = sum(seconds > SOCKET_TIMEOUT / 2 for seconds, _ in results)
    print(f"300 calls: slowest {slowest:.3f}s, {waited} waited, all done in {took:.2f}s")
    # Nobody waits longer than one socket timeout (plus scheduling slack on a busy box): the
    # calls queued behind the frozen connections give up when the breaker opens.
    assert slowest < SOCKET_TIMEOUT + 0.35
    assert cache.breaker.state is BreakerState.OPEN

    deadline = time.monotonic() + 15  # thawed: the next probe closes it
    while True:
        with contextlib.suppress(CacheUnavailable):
            if await cache.get("k") == 1:
                break
        assert time.monotonic() < deadline, "the breaker never closed after the thaw"
        await asyncio.sleep(0.2)
    assert cache.breaker.state is BreakerState.CLOSED


async def test_a_call_that_lost_its_cancellation_still_gives_up_when_the_breaker_opens(
    cache: RedisCache, fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py writes a command under ``asyncio.wait_for``, which on Python 3.11 returns the
    write's result and drops a cancellation that lands in the same loop turn: the breaker
    opening just then used to leave the call waiting out its own socket timeout (seen in the
    concurrent test above, 0.89 s, about one run in ten). Here the breaker opens exactly
    then, every time."""
    await cache.set("k", 1)
    write = BreakerAwareConnection._send_packed_command

    async def write_then_open(connection: BreakerAwareConnection, command: Any) -> None:
        await write(connection, command)
        for _ in range(cache.breaker.failure_threshold):
            cache.breaker.record_failure(RuntimeError("injected"))

    with frozen(fresh_redis):
        monkeypatch.setattr(BreakerAwareConnection, "_send_packed_command", write_then_open)
        seconds, result = await timed(cache.get("k"))
        monkeypatch.undo()
    assert isinstance(result, CacheUnavailable)
    assert "opened while this call waited" in str(result)
    assert seconds < SOCKET_TIMEOUT / 2
    # The connection that sent the abandoned GET was closed, not put back with its reply
    # still to come: after the thaw every reply belongs to its own command.
    cache.breaker.reset()
    await cache.set("k2", 2)
    assert [await cache.get("k"), await cache.get("k2"), await cache.get("k")] == [1, 2, 1]


async def test_serial_reads_on_a_frozen_redis_open_the_breaker_within_a_few_calls(
    cache: RedisCache, fresh_redis: RedisServer
) -> None:
    await cache.set("k", 1)
    with frozen(fresh_redis):
        results = [await timed(cache.get("k")) for _ in range(20)]
    assert all(isinstance(result, CacheUnavailable) for _, result in results)
    slow = [seconds for seconds, _ in results if seconds > SOCKET_TIMEOUT / 2]
    assert len(slow) <= cache.breaker.failure_threshold  # then it is open: no more waiting
    assert max(seconds for seconds, _ in results[cache.breaker.failure_threshold :]) < 0.1


async def test_a_redis_killed_under_load_logs_a_line_per_state_change_and_counts_the_rest(
    cache: RedisCache, fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="redline")
    stop = asyncio.Event()
    raised: list[BaseException] = []
    calls = 0

    async def worker(seed: int) -> None:
        nonlocal calls
        rng = random.Random(seed)
        while not stop.is_set():
            key = f"k{rng.randrange(50)}"
            try:
                if rng.random() < 0.7:
                    await cache.get(key)
                else:
                    await cache.set(key, seed)
            except CacheUnavailable:
                pass
            except Exception as exc:  # anything else reaching a caller is a bug
                raised.append(exc)
            calls += 1
            await asyncio.sleep(0.001)

    workers = [asyncio.create_task(worker(i)) for i in range(32)]
    await asyncio.sleep(0.5)
    fresh_redis.kill()
    await asyncio.sleep(1.5)
    fresh_redis.start()
    deadline = time.monotonic() + 15
    while cache.breaker.state is not BreakerState.CLOSED:
        assert time.monotonic() < deadline, "the breaker never closed after the restart"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*workers)

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("redline")]
    events = cache.stats().tier("redis").events
    print(f"{calls} calls, {len(lines)} log lines: {lines}; events {events}")
    assert not raised, raised[:3]
    assert calls > 500
    assert 2 <= len(lines) <= 5, lines  # opened, closed, and a failure line or two
    assert any("is open" in line for line in lines)
    assert any("is closed" in line for line in lines)
    assert events["state:open"] == 1
    assert events["state:closed"] == 1
    assert events["failure:call"] >= cache.breaker.failure_threshold


# -- cache-aside protections across faults ------------------------------------------------


def source_of_truth(key: str) -> Any:
    """The loader's answer for *key*: a value for the ``user:*`` keys, else MISSING."""
    return {"id": key} if key.startswith("user") else MISSING


async def test_cache_aside_with_bloom_negative_and_lock_answers_fast_while_redis_is_frozen(
    cache: RedisCache,
    fresh_redis: RedisServer,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bloom = RedisBloomFilter(cache.client, f"{namespace}-users", capacity=1_000)
    known = [f"user:{i}" for i in range(40)] + [f"gone:{i}" for i in range(10)]
    await bloom.add_many(known)
    aside = CacheAside(cache, ttl=60, lock=True, bloom=bloom, negative_ttl=30, lock_lease=2.0)
    loads = 0

    async def load(key: str) -> Any:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return source_of_truth(key)

    for key in known[:10] + known[40:45]:  # some values and negative answers cached
        await aside.get(key, functools.partial(load, key))

    rng = random.Random(3)
    caplog.set_level(logging.INFO, logger="redline")
    with frozen(fresh_redis):
        started = time.monotonic()

        async def caller(i: int) -> tuple[float, float, str, Any]:
            await asyncio.sleep(i * 0.01)
            key = rng.choice([*known, "stranger:1", "stranger:2"])
            began = time.monotonic() - started
            seconds, result = await timed(aside.get(key, lambda: load(key)))
            return began, seconds, key, result

        results = await asyncio.gather(*(caller(i) for i in range(200)))

    wrong = [(key, result) for _, _, key, result in results if result != source_of_truth(key)]
    assert not wrong, wrong[:5]
    late = [seconds for began, seconds, _, _ in results if began > 1.0]
    slowest = max(seconds for _, seconds, _, _ in results)
    print(
        f"frozen: slowest {slowest:.3f}s, median after the first second "
        f"{statistics.median(late) * 1000:.1f} ms, {loads} loads"
    )
    assert slowest < 2 * SOCKET_TIMEOUT + 0.5  # a probe and a lock command at worst
    # once the breaker is open, neither the Bloom filter nor the lock waits on Redis
    assert statistics.median(late) < 0.1
    # a line per cause (read, write, lock, Bloom filter, the breaker), not one per call
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("redline")]
    assert len(lines) <= 8, lines


@pytest.mark.parametrize("fault", ["kill", "freeze"])
async def test_cross_process_single_flight_survives_redis_dying_mid_load(
    fresh_redis: RedisServer, namespace: str, fault: str
) -> None:
    # two CacheAside on two clients: two processes as far as the lock can tell
    caches = [
        RedisCache.from_url(
            fresh_redis.url,
            namespace=namespace,
            breaker=CircuitBreaker(failure_threshold=3, reset_timeout=1.0, name=f"redis{i}"),
        )
        for i in range(2)
    ]
    asides = [
        CacheAside(c, ttl=60, lock=True, lock_lease=2.0, lock_wait_timeout=6.0) for c in caches
    ]
    loads = 0

    async def load() -> dict[str, int]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.6)
        return {"report": 7}

    async def fault_soon() -> None:
        await asyncio.sleep(0.25)  # the first load is running, the others wait on the lock
        if fault == "kill":
            fresh_redis.kill()
        else:
            assert fresh_redis.proc is not None
            os.kill(fresh_redis.proc.pid, signal.SIGSTOP)

    try:
        calls = [timed(asides[i % 2].get("report", load)) for i in range(40)]
        results = await asyncio.gather(fault_soon(), *calls)
    finally:
        if fault == "freeze" and fresh_redis.proc is not None:
            os.kill(fresh_redis.proc.pid, signal.SIGCONT)
        for c in caches:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 5)
    outcomes = results[1:]
    slowest = max(seconds for seconds, _ in outcomes)
    print(f"{fault}: slowest {slowest:.2f}s, {loads} loads")
    assert all(result == {"report": 7} for _, result in outcomes), outcomes[:3]
    # in-process single-flight holds (at most one load per process per round), and no
    # caller waits past its cap
    assert loads <= 4
    assert slowest < asides[0].lock_wait_timeout


async def test_a_frozen_redis_is_given_up_on_after_the_stall_timeout_not_socket_timeouts(
    fresh_redis: RedisServer, namespace: str
) -> None:
    # RedisCache's own breaker: 3 failures, or 0.25 s of calls waiting with none answered
    async with RedisCache.from_url(fresh_redis.url, namespace=namespace) as cache:
        await cache.set("k", 1)
        stall = 0.25  # the default breaker's stall_timeout
        with frozen(fresh_redis):
            first = await timed(cache.get("k"))
            rest = [await timed(cache.get("k")) for _ in range(10)]
            both = await asyncio.gather(*(timed(cache.set(f"k{i}", i)) for i in range(50)))
    assert isinstance(first[1], CacheUnavailable)
    # one call's wait opens it: not failure_threshold socket timeouts
    assert stall <= first[0] < SOCKET_TIMEOUT
    assert max(seconds for seconds, _ in rest + both) < 0.1
    assert cache.breaker.stats().opened_count == 1


async def test_connections_slow_to_set_up_are_no_stall_but_silence_after_is(
    redis_server: RedisServer, namespace: str
) -> None:
    # A 0.5 s stall timeout (room for a busy box's hiccups) through a proxy that holds every
    # new connection 1.2 s before its handshake is answered; socket timeouts far longer
    proxy = await asyncio.to_thread(FaultProxy((HOST, redis_server.port)).start)
    try:
        proxy.set_setup_delay(1.2)
        async with RedisCache.from_url(
            f"redis://{HOST}:{proxy.port}",
            namespace=namespace,
            socket_timeout=10.0,
            socket_connect_timeout=10.0,
            breaker=CircuitBreaker(failure_threshold=3, reset_timeout=30.0, stall_timeout=0.5),
        ) as cache:
            await cache.set("k", 0)  # a cold pool: the first call sets up its connection
            # one open connection, and 20 calls at once: most set up one of their own
            await asyncio.gather(*(cache.set(f"k{i}", i) for i in range(20)))
            assert proxy.accepted > 1
            assert await cache.get_many([f"k{i}" for i in range(20)]) == {
                f"k{i}": i for i in range(20)
            }
            assert cache.breaker.stats().opened_count == 0

            proxy.set_mode("blackhole")  # the open connections go silent: that is a stall
            results = await asyncio.gather(*(timed(cache.get(f"k{i}")) for i in range(20)))
    finally:
        await asyncio.to_thread(proxy.stop)
    assert all(isinstance(result, CacheUnavailable) for _, result in results)
    assert max(seconds for seconds, _ in results) < 2.5  # not the 10 s socket timeout
    assert "no answer for" in (cache.breaker.stats().last_error or "")
