"""An in-process token-bucket rate limiter with FIFO-fair waiting.

Example::

    limiter = RateLimiter(100, per=1.0, burst=20)   # 100 per second, bursts of 20
    async with limiter:
        await call_the_api()
    wait = limiter.try_acquire(5)   # 0.0 if taken, else seconds until 5 tokens are free
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from redline.concurrency._private import validate_cost, validate_rate

__all__ = ["RateLimiter", "RateLimiterStats"]


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    """A snapshot of a :class:`RateLimiter`."""

    rate: float
    per: float
    capacity: float
    tokens: float
    waiting: int
    acquired: int
    refused: int
    waited_seconds_total: float


class RateLimiter:
    """Allow ``rate`` units of work per ``per`` seconds, in bursts of up to ``burst``.

    The bucket starts full (``burst`` tokens, default ``rate``) and refills continuously.
    Waiters are served first come, first served: a later small request never overtakes an
    earlier large one, and ``try_acquire`` does not jump the queue either.
    """

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = validate_rate(rate, per, burst)
        self._rate = float(rate)
        self._per = float(per)
        self._fill_rate = self._rate / self._per  # tokens per second
        self._timer = timer
        self._tokens = self._capacity
        self._updated = timer()
        self._queue = asyncio.Lock()  # FIFO: waiters are woken in arrival order
        self._waiting = 0
        self._acquired = 0
        self._refused = 0
        self._waited_total = 0.0

    @property
    def capacity(self) -> float:
        return self._capacity

    def _refill(self) -> None:
        now = self._timer()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._capacity, self._tokens + elapsed * self._fill_rate)
        self._updated = now

    def _take(self, cost: float) -> float:
        """Take *cost* tokens (return 0) or return how long until they are there."""
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            self._acquired += 1
            return 0.0
        return (cost - self._tokens) / self._fill_rate

    def try_acquire(self, cost: float = 1) -> float:
        """Take *cost* tokens now and return 0.0, or return the seconds to wait for them."""
        cost = validate_cost(cost, self._capacity)
        if self._waiting:
            self._refill()
            self._refused += 1
            # Everyone queued is served first; this is a lower bound on the wait.
            return max((cost - self._tokens) / self._fill_rate, 1.0 / self._fill_rate)
        wait = self._take(cost)
        if wait:
            self._refused += 1
        return wait

    async def acquire(self, cost: float = 1) -> None:
        """Wait (FIFO) until *cost* tokens are available and take them."""
        cost = validate_cost(cost, self._capacity)
        if not self._waiting and self._take(cost) == 0.0:
            return
        started = self._timer()
        self._waiting += 1
        try:
            async with self._queue:
                while (wait := self._take(cost)) > 0:
                    await asyncio.sleep(wait)
        finally:
            self._waiting -= 1
            self._waited_total += max(0.0, self._timer() - started)

    def stats(self) -> RateLimiterStats:
        """A frozen snapshot: tokens now, waiters, counters."""
        self._refill()
        return RateLimiterStats(
            rate=self._rate,
            per=self._per,
            capacity=self._capacity,
            tokens=self._tokens,
            waiting=self._waiting,
            acquired=self._acquired,
            refused=self._refused,
            waited_seconds_total=self._waited_total,
        )

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        self._refill()
        return (
            f"<RateLimiter {self._rate:g}/{self._per:g}s capacity={self._capacity:g} "
            f"tokens={self._tokens:.2f} waiting={self._waiting}>"
        )
