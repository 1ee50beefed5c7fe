"""The Redis-backed per-client rate limiter when its Redis freezes: checks stop waiting on it
within the breaker's stall bound, the limit keeps holding per process, and the outage is
logged once, not once per request."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from redline.cache.breaker import BreakerState
from redline.cache.shared_redis import SharedRedis
from redline.exceptions import RateLimited
from redline.serve.auth_failures import AuthFailureLimiter
from redline.serve.errors import APIError
from redline.serve.ratelimit import ClientRateLimiter
from tests._services import RedisServer


async def test_a_frozen_redis_neither_stalls_nor_lifts_the_limit(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = SharedRedis.from_url(fresh_redis.url, name="rate limiter")
    assert redis is not None
    limiter = ClientRateLimiter(1, 60, redis)
    try:
        await limiter.check("before")  # Redis answers: its bucket holds one token a minute
        with pytest.raises(RateLimited):
            await limiter.check("before")
        assert fresh_redis.proc is not None
        os.kill(fresh_redis.proc.pid, signal.SIGSTOP)
        try:
            caplog.set_level(logging.INFO, logger="redline.serve.ratelimit")
            # Concurrent first requests of many clients while Redis is silent: they wait
            # for the stall bound at most, then this process's buckets decide.
            await asyncio.wait_for(
                asyncio.gather(*(limiter.check(f"client{i}") for i in range(20))), 5
            )
            assert redis.breaker_for("redline:rl:during").state is BreakerState.OPEN
            started = time.monotonic()
            await limiter.check("during")
            limited = 0
            for _ in range(10):  # the limit still holds: no failing open
                try:
                    await limiter.check("during")
                except RateLimited:
                    limited += 1
            elapsed = time.monotonic() - started
        finally:
            os.kill(fresh_redis.proc.pid, signal.SIGCONT)
        assert limited == 10
        # With the breaker open no check touches the socket (the old code waited out the
        # client's 0.5 s socket timeout on each of these 11 checks, then let it through).
        assert elapsed < 2.0, f"11 checks took {elapsed:.2f} s"
        lines = [r for r in caplog.records if r.name == "redline.serve.ratelimit"]
        assert len(lines) <= 3, [r.getMessage() for r in lines]
        assert limiter.events.counts().get("failure:redis", 0) >= 11
    finally:
        await limiter.close()


async def test_failed_keys_are_still_throttled_while_redis_is_frozen(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = SharedRedis.from_url(fresh_redis.url, name="auth failure counter")
    assert redis is not None
    failures = AuthFailureLimiter(1, 60, redis=redis)
    try:
        await failures.record_failure("198.51.100.1")  # counted in Redis: within budget
        assert fresh_redis.proc is not None
        os.kill(fresh_redis.proc.pid, signal.SIGSTOP)
        try:
            caplog.set_level(logging.INFO, logger="redline.serve.auth_failures")
            started = time.monotonic()
            refused = 0
            for _ in range(12):
                try:
                    await failures.record_failure("198.51.100.2")
                except APIError as exc:
                    refused += exc.status == 429
            elapsed = time.monotonic() - started
        finally:
            os.kill(fresh_redis.proc.pid, signal.SIGCONT)
        assert refused == 11  # the first within the in-process budget, the rest refused
        assert redis.breaker_for("redline:authfail:198.51.100.2").state is BreakerState.OPEN
        assert elapsed < 2.0, f"12 attempts took {elapsed:.2f} s"  # old: 0.5 s socket wait each
        lines = [r for r in caplog.records if r.name == "redline.serve.auth_failures"]
        assert len(lines) <= 3, [r.getMessage() for r in lines]
    finally:
        await failures.close()
