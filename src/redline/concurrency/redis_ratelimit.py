"""A global token-bucket rate limit held in Redis, shared by every process and replica.

One Lua script reads Redis server ``TIME`` (no local clocks, so skewed hosts agree), refills
and takes tokens atomically. Each limiter uses one key, so it lives in one hash slot and works
the same on standalone Redis and on Redis Cluster.

Example::

    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379")
    limiter = RedisRateLimiter(client, "rl:embed", rate=100, per=1.0, burst=20)
    retry_after = await limiter.try_acquire()      # 0.0 when allowed
    await limiter.acquire(max_wait=0.5)            # RateLimited(retry_after) past 0.5 s
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError
from tenacity import AsyncRetrying, RetryCallState, retry_if_result

from redline.concurrency._private import validate_cost, validate_rate
from redline.exceptions import CacheUnavailable, RateLimited

__all__ = ["RedisRateLimiter"]


def _wait_of(state: RetryCallState) -> float:
    """The seconds-to-wait that the last ``try_acquire`` returned."""
    outcome = state.outcome
    return float(outcome.result()) if outcome is not None else 0.0


# KEYS[1] bucket; ARGV: tokens per second, capacity, cost. Returns {granted, wait, tokens}
# as strings (Lua numbers would be truncated to integers in the reply).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
end
if tokens >= cost then
  tokens = tokens - cost
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
             'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
  return {1, '0', string.format('%.6f', tokens)}
end
return {0, string.format('%.6f', (cost - tokens) / rate), string.format('%.6f', tokens)}
"""
_SHA = hashlib.sha1(_TOKEN_BUCKET.encode()).hexdigest()


class RedisRateLimiter:
    """``rate`` units per ``per`` seconds (bursts of ``burst``) across all users of ``key``.

    ``client`` is a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``; the
    limiter does not own it. Redis failures raise :class:`~redline.exceptions.CacheUnavailable`.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        key: str,
        rate: float,
        per: float = 1.0,
        burst: float | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        self._capacity = validate_rate(rate, per, burst)
        self._client = client
        self.key = key
        self._rate = float(rate)
        self._per = float(per)
        self._fill_rate = self._rate / self._per
        self._acquired = 0
        self._refused = 0

    @property
    def capacity(self) -> float:
        return self._capacity

    async def _run_script(self, cost: float) -> tuple[bool, float]:
        args: list[Any] = [repr(self._fill_rate), repr(self._capacity), repr(cost)]
        try:
            try:
                reply = await self._client.evalsha(_SHA, 1, self.key, *args)
            except NoScriptError:
                reply = await self._client.eval(_TOKEN_BUCKET, 1, self.key, *args)
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from exc
        granted, wait = int(reply[0]), float(reply[1])
        return granted == 1, wait

    async def try_acquire(self, cost: float = 1) -> float:
        """Take *cost* tokens and return 0.0, or return the seconds to wait (``Retry-After``)."""
        cost = validate_cost(cost, self._capacity)
        granted, wait = await self._run_script(cost)
        if granted:
            self._acquired += 1
            return 0.0
        self._refused += 1
        return max(wait, 1e-6)

    async def acquire(self, cost: float = 1, max_wait: float | None = None) -> None:
        """Wait for *cost* tokens; ``RateLimited`` when that takes longer than *max_wait*.

        Waits exactly as long as Redis says (no blind backoff); callers in other processes
        are not queued fairly against each other, so under contention a caller may retry.
        """
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        loop = asyncio.get_running_loop()
        deadline = None if max_wait is None else loop.time() + max_wait

        def advised_wait(state: RetryCallState) -> float:
            return _wait_of(state)

        def past_deadline(state: RetryCallState) -> bool:
            return deadline is not None and loop.time() + _wait_of(state) > deadline

        def refuse(state: RetryCallState) -> None:
            wait = _wait_of(state)
            raise RateLimited(
                f"rate limit {self.key!r} ({self._rate:g}/{self._per:g}s) exceeded; "
                f"retry after {wait:.3f}s",
                retry_after=wait,
            )

        retrying = AsyncRetrying(
            retry=retry_if_result(lambda wait: wait > 0),
            wait=advised_wait,
            stop=past_deadline,
            retry_error_callback=refuse,
        )
        await retrying(self.try_acquire, cost)

    async def reset(self) -> None:
        """Refill the bucket (deletes its key)."""
        try:
            await self._client.delete(self.key)
        except (RedisError, OSError) as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> CacheUnavailable:
        """Every redis-py failure becomes ``CacheUnavailable``; the message says which kind."""
        if isinstance(exc, ResponseError):
            return CacheUnavailable(f"rate limiter {self.key!r}: Redis refused the command: {exc}")
        return CacheUnavailable(f"rate limiter {self.key!r}: Redis unavailable: {exc}")

    def __repr__(self) -> str:
        return (
            f"<RedisRateLimiter key={self.key!r} {self._rate:g}/{self._per:g}s "
            f"capacity={self._capacity:g} acquired={self._acquired} refused={self._refused}>"
        )
