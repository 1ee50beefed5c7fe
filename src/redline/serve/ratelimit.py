"""Per-client rate limiting (``REDLINE_RATE_LIMIT``, e.g. ``100/s``): a token bucket per client.

With a Redis cache URL the buckets live in Redis (:class:`RedisRateLimiter`, shared by every
worker and replica); otherwise they are in-process (:class:`RateLimiter`). The Redis calls go
through a :class:`~redline.cache.breaker.CircuitBreaker` with stall detection: a Redis that
fails or stops answering (frozen) is given up on within ``stall_timeout`` (0.25 s), and while
the breaker is open every check uses this process's own buckets at once — the limit still
holds per process rather than failing open, and a cache outage never becomes an API outage
or a wait per request. The outage is logged once per state change (an
:class:`~redline._events.EventLog`), not once per request.

Example::

    limiter = await ClientRateLimiter.create(settings)
    await limiter.check("key:ab12cd")     # raises RateLimited(retry_after=...) when over
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline._events import EventLog
from redline.cache.breaker import CircuitBreaker
from redline.cache.redis_url import REDIS_SCHEMES, parse_redis_url, redis_client
from redline.concurrency.ratelimit import RateLimiter
from redline.concurrency.redis_ratelimit import RedisRateLimiter
from redline.exceptions import CacheUnavailable, ConfigError, RateLimited
from redline.serve.settings import Settings, parse_rate_limit

__all__ = ["ClientRateLimiter", "redis_client_for"]

logger = logging.getLogger(__name__)
_MAX_LOCAL_CLIENTS = 10_000


class ClientRateLimiter:
    """One token bucket per client id, in Redis or in process."""

    def __init__(
        self,
        rate: float,
        per: float,
        redis_client: Any | None = None,
        *,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.rate = rate
        self.per = per
        self._redis = redis_client
        self._local: OrderedDict[str, RateLimiter] = OrderedDict()
        self.events = EventLog(logger, "rate limiter")
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=3, reset_timeout=2.0, stall_timeout=0.25, name="rate limiter"
        )
        self.breaker.events = self.events

    @classmethod
    async def create(cls, settings: Settings) -> ClientRateLimiter:
        """Build from settings (the Redis client comes from ``cache_url`` when it is Redis)."""
        if settings.rate_limit is None:
            raise ConfigError("rate_limit is not set")
        rate, per = parse_rate_limit(settings.rate_limit)
        return cls(rate, per, redis_client_for(settings.cache_url))

    async def check(self, client: str) -> None:
        """Take one token for *client*; ``RateLimited`` with ``retry_after`` when empty."""
        wait: float | None = None
        if self._redis is not None:
            limiter = RedisRateLimiter(self._redis, f"redline:rl:{client}", self.rate, self.per)
            try:
                wait = await self.breaker.call(limiter.try_acquire)
            except CacheUnavailable as exc:  # counted; this process's bucket decides
                self.events.failure("redis", exc)
        if wait is None:
            wait = self._bucket(client).try_acquire()
        if wait > 0:
            raise RateLimited(
                f"rate limit {self.rate:g}/{self.per:g}s exceeded for this client; "
                f"retry in {wait:.2f}s",
                retry_after=wait,
            )

    def _bucket(self, client: str) -> RateLimiter:
        bucket = self._local.get(client)
        if bucket is None:
            bucket = self._local[client] = RateLimiter(self.rate, self.per)
            if len(self._local) > _MAX_LOCAL_CLIENTS:
                self._local.popitem(last=False)
        else:
            self._local.move_to_end(client)
        return bucket

    async def close(self) -> None:
        """Close the Redis connection pool, if any."""
        if self._redis is not None:
            await self._redis.aclose()

    def __repr__(self) -> str:
        where = "redis" if self._redis is not None else f"local({len(self._local)} clients)"
        return f"ClientRateLimiter({self.rate:g}/{self.per:g}s, {where})"


def redis_client_for(cache_url: str) -> Redis | RedisCluster | None:
    """The shared Redis client for a Redis cache URL (any scheme of
    :mod:`redline.cache.redis_url`, ``tiered+`` included), None for a non-Redis one.

    Built by :func:`~redline.cache.redis_url.redis_client`, so it has the cache's timeouts,
    TLS and credentials; a malformed Redis URL raises ``ConfigError``.
    """
    scheme = cache_url.partition("://")[0].lower().removeprefix("tiered+")
    if scheme not in REDIS_SCHEMES:
        return None
    return redis_client(parse_redis_url(cache_url))
