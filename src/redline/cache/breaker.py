"""A circuit breaker: stop waiting on a dead dependency, probe it now and then, recover.

States: ``closed`` (calls go through) → ``open`` after ``failure_threshold`` consecutive
failures (calls fail at once with :class:`~redline.exceptions.CacheUnavailable`, no socket
timeouts) → ``half_open`` once ``reset_timeout`` seconds have passed (one probe call goes
through; the others still fail fast) → ``closed`` when the probe succeeds, ``open`` again
when it fails.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redline.exceptions import CacheUnavailable

__all__ = ["BreakerState", "BreakerStats", "CircuitBreaker"]

T = TypeVar("T")


class BreakerState(enum.StrEnum):
    """Where a :class:`CircuitBreaker` stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of a :class:`CircuitBreaker`."""

    state: BreakerState
    consecutive_failures: int
    opened_count: int
    rejected: int
    last_error: str | None
    failure_threshold: int
    reset_timeout: float


class CircuitBreaker:
    """Fail fast while a dependency is down; let one probe through after ``reset_timeout``.

    Example::

        breaker = CircuitBreaker(failure_threshold=5, reset_timeout=2.0)
        breaker.allow()                 # raises CacheUnavailable while open
        try:
            reply = await redis.ping()
        except ConnectionError as exc:
            breaker.record_failure(exc)
            raise
        breaker.record_success()

    ``await breaker.call(fn)`` does the same for a coroutine function, counting every
    exception as a failure. ``timer`` is injectable so tests can move time by hand.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 2.0,
        timer: Callable[[], float] = time.monotonic,
        name: str = "breaker",
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold must be an int, got {failure_threshold!r}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not reset_timeout > 0:
            raise ValueError(f"reset_timeout must be > 0, got {reset_timeout}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.name = name
        self._timer = timer
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_count = 0
        self._rejected = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None
        self._last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        """The current state (``open`` turns into ``half_open`` only when a call asks)."""
        return self._state

    def allow(self) -> None:
        """Let a call through, or raise :class:`CacheUnavailable` at once while open."""
        if self._state is BreakerState.CLOSED:
            return
        now = self._timer()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at >= self.reset_timeout:
                self._state = BreakerState.HALF_OPEN
                self._probe_started_at = now
                return
        elif self._probe_started_at is None or now - self._probe_started_at >= self.reset_timeout:
            # Half-open and the last probe never reported back (cancelled): send another.
            self._probe_started_at = now
            return
        self._rejected += 1
        raise CacheUnavailable(
            f"circuit breaker {self.name!r} is {self._state.value} after "
            f"{self._failures} consecutive failures (last error: {self._last_error})"
        )

    def record_success(self) -> None:
        """A call went through: reset the failure count and close the breaker."""
        self._failures = 0
        self._probe_started_at = None
        self._state = BreakerState.CLOSED

    def record_failure(self, exc: BaseException | None = None) -> None:
        """A call failed: count it, and open the breaker at the threshold or on a failed probe."""
        self._failures += 1
        if exc is not None:
            self._last_error = f"{type(exc).__name__}: {exc}"
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._timer()
        self._probe_started_at = None
        self._opened_count += 1

    def reset(self) -> None:
        """Close the breaker by hand and forget the failures."""
        self._failures = 0
        self._probe_started_at = None
        self._state = BreakerState.CLOSED

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``await fn()`` through the breaker; any exception counts as a failure."""
        self.allow()
        try:
            result = await fn()
        except Exception as exc:
            self.record_failure(exc)
            raise
        self.record_success()
        return result

    def stats(self) -> BreakerStats:
        """A frozen snapshot of the counters."""
        return BreakerStats(
            state=self._state,
            consecutive_failures=self._failures,
            opened_count=self._opened_count,
            rejected=self._rejected,
            last_error=self._last_error,
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
        )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value}, "
            f"failures={self._failures}/{self.failure_threshold}, "
            f"opened={self._opened_count}, reset_timeout={self.reset_timeout})"
        )
