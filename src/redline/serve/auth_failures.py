"""Failed API-key attempts, counted per client address and throttled
(``REDLINE_AUTH_FAILURE_LIMIT``).

A failure is a wrong key (a request without one guesses nothing and is not counted). Each
address has a budget of failures (a token bucket: ``10/min`` allows 10 at once, then one
every 6 s). A failure past the budget answers ``429`` with ``Retry-After`` instead of ``401``
and blocks the address until a token is back: while blocked, every request from it that needs
a key gets ``429``, a valid key included, so a guesser cannot tell a right key from a wrong one
faster than the budget allows. Requests with a valid key are never counted.

With a Redis cache URL the failures are counted in Redis (one bucket per address, shared by
every worker and replica); the block itself is kept in each process, which learns it on the
first failure it sees past the shared budget (no Redis call for requests with a valid key).
If Redis fails or goes silent, failures are counted in process: its calls go through the
circuit breaker of the node that holds the bucket, with stall detection, on the client the
server's cache uses (:class:`~redline.cache.shared_redis.SharedRedis`; given up on within
0.25 s, then no Redis call until a probe succeeds), and the outage is logged once per state
change, not once per attempt.

Example::

    failures = AuthFailureLimiter(10, per=60)
    failures.check("203.0.113.7")                 # APIError 429 while the address is blocked
    await failures.record_failure("203.0.113.7")  # APIError 429 once past the budget
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from redline._events import EventLog
from redline.cache.shared_redis import SharedRedis
from redline.concurrency.ratelimit import RateLimiter
from redline.exceptions import CacheUnavailable
from redline.serve.errors import APIError
from redline.serve.settings import Settings, parse_rate_limit

if TYPE_CHECKING:
    from redline.cache.base import Cache

__all__ = ["AuthFailureLimiter"]

logger = logging.getLogger(__name__)
_MAX_ADDRESSES = 10_000
_REDIS_PREFIX = "redline:authfail:"


class AuthFailureLimiter:
    """A failure budget per client address; past it, the address is blocked for a while."""

    def __init__(
        self,
        rate: float,
        per: float,
        *,
        redis: SharedRedis | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError(f"rate and per must be > 0, got {rate} and {per}")
        self.rate = rate
        self.per = per
        self.redis = redis
        self._timer = timer
        self._buckets: OrderedDict[str, RateLimiter] = OrderedDict()
        self._blocked: OrderedDict[str, float] = OrderedDict()  # address -> blocked until
        self.events = EventLog(logger, "auth failure counter")

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: Cache | None = None
    ) -> AuthFailureLimiter | None:
        """None when there are no API keys or ``auth_failure_limit`` is off. With a Redis
        ``cache_url``, on *cache*'s Redis client and breakers when it has them, else on a
        client of its own."""
        if not settings.api_keys or settings.auth_failure_limit is None:
            return None
        rate, per = parse_rate_limit(settings.auth_failure_limit)
        redis = SharedRedis.of_cache(cache) or SharedRedis.from_url(
            settings.cache_url, name="auth failure counter"
        )
        return cls(rate, per, redis=redis)

    def check(self, address: str) -> None:
        """Raise a 429 ``APIError`` while *address* is blocked."""
        until = self._blocked.get(address)
        if until is None:
            return
        left = until - self._timer()
        if left > 0:
            raise self._refusal(left)
        del self._blocked[address]

    async def record_failure(self, address: str) -> None:
        """Count one failed attempt; past the budget, block *address* and raise a 429."""
        wait = await self._take(address)
        if wait <= 0:
            return
        self._blocked[address] = self._timer() + wait
        self._blocked.move_to_end(address)
        if len(self._blocked) > _MAX_ADDRESSES:
            self._blocked.popitem(last=False)
        raise self._refusal(wait)

    async def _take(self, address: str) -> float:
        """A token from the address's bucket: 0.0, or the seconds until one is back."""
        redis = self.redis
        if redis is not None:
            try:
                return await redis.take_token(_REDIS_PREFIX + address, self.rate, self.per)
            except CacheUnavailable as exc:  # counted; this process's bucket decides
                self.events.failure("redis", exc)
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = RateLimiter(self.rate, self.per, timer=self._timer)
            if len(self._buckets) > _MAX_ADDRESSES:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket.try_acquire()

    def _refusal(self, wait: float) -> APIError:
        return APIError(
            429,
            f"too many failed API-key attempts from this address "
            f"(at most {self.rate:g} per {self.per:g}s); retry in {wait:.0f}s",
            code="too_many_auth_failures",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def blocked(self) -> int:
        """How many addresses are blocked now."""
        now = self._timer()
        return sum(1 for until in self._blocked.values() if until > now)

    async def close(self) -> None:
        """Close the Redis client if this counter built it (a cache's is the cache's)."""
        if self.redis is not None:
            await self.redis.aclose()

    def __repr__(self) -> str:
        where = "redis" if self.redis is not None else "local"
        return (
            f"AuthFailureLimiter({self.rate:g}/{self.per:g}s, {where}, "
            f"{self.blocked()} blocked of {len(self._buckets)} counted)"
        )
