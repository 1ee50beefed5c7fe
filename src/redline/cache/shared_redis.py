"""One Redis client and one circuit breaker per node, shared by every user of a Redis URL.

In one server process the cache, the per-client rate limiter, the auth-failure counter and
the usage stream all talk to the Redis of ``cache_url``. They send their commands on one
client (one connection pool per node) through one breaker per node, so a Redis that freezes
is detected once, by whichever call notices first, and every user fails fast from then on:
not once per user, each with its own sockets and its own stall timer.

:meth:`SharedRedis.of_cache` borrows a cache's (its Redis tier's) client and breakers; the
cache keeps them and closes them. :meth:`SharedRedis.from_url` builds its own, for a user
with no cache to borrow from, and closes them in :meth:`~SharedRedis.aclose`.

Example::

    redis = SharedRedis.of_cache(cache) or SharedRedis.from_url("redis://127.0.0.1:6379/0")
    breaker = redis.breaker_for("redline:rl:client-1")    # that key's node's breaker
    await breaker.call(lambda: redis.client.ping())
    await redis.aclose()                                  # closes only what it built
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redline.cache.breaker import CircuitBreaker

if TYPE_CHECKING:
    from redline.cache.base import Cache
    from redline.cache.lock import RedisClient

__all__ = ["SharedRedis"]

logger = logging.getLogger(__name__)


class SharedRedis:
    """A Redis client and the circuit breaker of each of its nodes (see the module docstring).

    ``breaker_for(redis_key)`` is the breaker of the node that owns that key: the one
    breaker of standalone Redis; on a Cluster, one per master once the client has learnt
    the slot table (before that, the template every node's breaker is cloned from).
    """

    def __init__(
        self,
        client: RedisClient,
        breaker_for: Callable[[str], CircuitBreaker],
        *,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.breaker_for = breaker_for
        self.owns_client = close is not None
        self._close = close

    @classmethod
    def of_cache(cls, cache: Cache | None) -> SharedRedis | None:
        """The client and breakers of *cache*'s Redis tier, borrowed (``None``: it has none)."""
        if cache is None:
            return None
        from redline.cache.abilities import redis_tier

        tier = redis_tier(cache)
        if tier is None:
            return None
        return cls(tier.client, tier.breaker_for)

    @classmethod
    def from_url(cls, url: str, *, name: str = "redis") -> SharedRedis | None:
        """A client of its own for a Redis URL (any scheme of :mod:`redline.cache.redis_url`,
        ``tiered+`` included; ``None`` for a non-Redis URL), with breakers named *name* that
        give up on a node after 3 failures or 0.25 s without an answer."""
        client = redis_client_for_url(url)
        if client is None:
            return None
        from redline.cache._routes import Routes

        template = CircuitBreaker(
            failure_threshold=3, reset_timeout=2.0, stall_timeout=0.25, name=name
        )
        routes = Routes(client, template, max_in_flight=None, name=name, logger=logger)

        async def close() -> None:
            await routes.aclose()
            await client.aclose()

        return cls(client, routes.breaker_for, close=close)

    async def take_token(self, key: str, rate: float, per: float) -> float:
        """One token from the Redis token bucket *key* (``rate`` per ``per`` seconds), through
        the breaker of the key's node: 0.0, or the seconds until one is back. Raises
        ``CacheUnavailable`` when Redis fails, goes silent or its breaker is open."""
        from redline.concurrency.redis_ratelimit import RedisRateLimiter

        bucket = RedisRateLimiter(self.client, key, rate, per)
        return await self.breaker_for(key).call(bucket.try_acquire)

    async def aclose(self) -> None:
        """Close the client if this object built it (a borrowed one is its cache's to close)."""
        close, self._close = self._close, None
        if close is not None:
            await close()

    def __repr__(self) -> str:
        kind = type(self.client).__name__
        return f"SharedRedis({kind}, {'own' if self.owns_client else 'borrowed'})"


def redis_client_for_url(url: str) -> RedisClient | None:
    """A client for a Redis URL (``tiered+`` included), ``None`` for a non-Redis one; built
    by :func:`~redline.cache.redis_url.redis_client`, so it has the cache's timeouts, TLS
    and credentials. A malformed Redis URL raises ``ConfigError``."""
    from redline.cache.redis_url import REDIS_SCHEMES, parse_redis_url, redis_client

    scheme = url.partition("://")[0].lower().removeprefix("tiered+")
    if scheme not in REDIS_SCHEMES:
        return None
    return redis_client(parse_redis_url(url))
