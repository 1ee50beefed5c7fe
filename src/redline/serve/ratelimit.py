"""Per-client rate limiting (``REDLINE_RATE_LIMIT``, e.g. ``100/s``): a token bucket per client.

With a Redis cache URL the buckets live in Redis (:class:`RedisRateLimiter`, shared by every
worker and replica); otherwise they are in-process (:class:`RateLimiter`). The Redis calls go
through the circuit breaker of the node that holds the bucket, with stall detection, on the
client the server's cache uses (:class:`~redline.cache.shared_redis.SharedRedis`: one
connection pool and one breaker per node for every user of the URL): a Redis that fails or
stops answering (frozen) is given up on within the stall bound (0.25 s), once for the whole
process, and while the breaker is open every check uses this process's own buckets at once —
the limit still holds per process rather than failing open, and a cache outage never becomes
an API outage or a wait per request. The outage is logged once per state change (an
:class:`~redline._events.EventLog`), not once per request.

Example::

    limiter = await ClientRateLimiter.create(settings, cache)
    await limiter.check("key:ab12cd")     # raises RateLimited(retry_after=...) when over
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from redline._events import EventLog
from redline.cache.shared_redis import SharedRedis
from redline.concurrency.ratelimit import RateLimiter
from redline.exceptions import CacheUnavailable, ConfigError, RateLimited
from redline.serve.settings import Settings, parse_rate_limit

if TYPE_CHECKING:
    from redline.cache.base import Cache

__all__ = ["ClientRateLimiter"]

logger = logging.getLogger(__name__)
_MAX_LOCAL_CLIENTS = 10_000


class ClientRateLimiter:
    """One token bucket per client id, in Redis or in process."""

    def __init__(self, rate: float, per: float, redis: SharedRedis | None = None) -> None:
        self.rate = rate
        self.per = per
        self.redis = redis
        self._local: OrderedDict[str, RateLimiter] = OrderedDict()
        self.events = EventLog(logger, "rate limiter")

    @classmethod
    async def create(cls, settings: Settings, cache: Cache | None = None) -> ClientRateLimiter:
        """Build from settings: with a Redis ``cache_url``, on *cache*'s Redis client and
        breakers when it has them, else on a client of its own."""
        if settings.rate_limit is None:
            raise ConfigError("rate_limit is not set")
        rate, per = parse_rate_limit(settings.rate_limit)
        redis = SharedRedis.of_cache(cache) or SharedRedis.from_url(
            settings.cache_url, name="rate limiter"
        )
        return cls(rate, per, redis)

    async def check(self, client: str) -> None:
        """Take one token for *client*; ``RateLimited`` with ``retry_after`` when empty."""
        wait: float | None = None
        redis = self.redis
        if redis is not None:
            try:
                wait = await redis.take_token(f"redline:rl:{client}", self.rate, self.per)
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
        """Close the Redis client if this limiter built it (a cache's is the cache's)."""
        if self.redis is not None:
            await self.redis.aclose()

    def __repr__(self) -> str:
        where = "redis" if self.redis is not None else f"local({len(self._local)} clients)"
        return f"ClientRateLimiter({self.rate:g}/{self.per:g}s, {where})"
