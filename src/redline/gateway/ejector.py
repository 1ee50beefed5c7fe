"""Outlier ejection for one upstream: after ``threshold`` consecutive failures it is taken out
of rotation for a cooldown (doubling on each ejection in a row, capped); when the cooldown
ends one probe call is let through, and its success puts the upstream back.

Example::

    ejector = OutlierEjector(threshold=3, cooldown=1.0)
    for _ in range(3):
        ejector.record_failure("connect refused")
    ejector.available()       # False for the next second
    ejector.state()           # "ejected for 1.0s after 3 failures: connect refused"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EjectorStats", "OutlierEjector"]


@dataclass(frozen=True, slots=True)
class EjectorStats:
    """Counters of one upstream's ejector."""

    consecutive_failures: int
    ejections: int
    ejected_until: float | None
    last_error: str | None


class OutlierEjector:
    """A small circuit breaker; *timer* is injectable so tests can move time."""

    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if not 0 < cooldown <= max_cooldown:
            raise ValueError(f"need 0 < cooldown <= max_cooldown, got {cooldown}, {max_cooldown}")
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._timer = timer
        self._failures = 0
        self._ejections = 0
        self._in_a_row = 0
        self._until: float | None = None
        self._probing = False
        self._last_error: str | None = None

    def available(self) -> bool:
        """True when calls may go to the upstream (healthy, or the one probe after a cooldown)."""
        if self._until is None:
            return True
        if self._timer() < self._until or self._probing:
            return False
        self._probing = True  # exactly one caller probes; the others keep away
        return True

    def record_success(self) -> None:
        """A call succeeded: back in rotation, failure counts reset."""
        self._failures = 0
        self._in_a_row = 0
        self._until = None
        self._probing = False

    def abandon(self) -> None:
        """A call given up by its caller (cancelled): neither success nor failure."""
        self._probing = False

    def record_failure(self, error: str) -> bool:
        """A call failed; eject after ``threshold`` in a row (a failed probe ejects again).
        True when this failure ejected the upstream."""
        self._last_error = error
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._probing = False
            self._ejections += 1
            self._in_a_row += 1
            pause = min(self.max_cooldown, self.cooldown * 2 ** (self._in_a_row - 1))
            self._until = self._timer() + pause
            return True
        return False

    @property
    def out(self) -> bool:
        """True from an ejection until a call succeeds again (cooldown and probe included)."""
        return self._until is not None

    def state(self) -> str:
        """One line for error messages: ``healthy``, ``probing`` or ``ejected for Ns ...``."""
        if self._until is None:
            if self._failures:
                return f"healthy ({self._failures} recent failures: {self._last_error})"
            return "healthy"
        left = self._until - self._timer()
        if left <= 0:
            return f"probing after {self._failures} failures: {self._last_error}"
        return f"ejected for {left:.1f}s after {self._failures} failures: {self._last_error}"

    def stats(self) -> EjectorStats:
        """A snapshot of the counters."""
        return EjectorStats(self._failures, self._ejections, self._until, self._last_error)

    def __repr__(self) -> str:
        return f"OutlierEjector({self.state()})"
