"""The last requests a server process answered, kept for windowed figures (the status page).

Prometheus counters and histograms only grow; a rate or a percentile "over the last ten
seconds" needs the requests themselves. :class:`RecentRequests` keeps the newest *capacity*
of them in a ring buffer (one ``deque.append`` per request) and summarises a window on demand::

    recent = RecentRequests(capacity=10_000)
    recent.record("/v1/embeddings", 200, 0.004)
    recent.window(10.0).p99_seconds        # 0.004
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

__all__ = ["RecentRequests", "RequestWindow"]


@dataclass(frozen=True, slots=True)
class RequestWindow:
    """Requests answered in the last ``span_seconds`` (shorter than asked when the buffer
    holds less history, or the process is younger)."""

    span_seconds: float
    count: int
    rate: float
    p50_seconds: float | None
    p99_seconds: float | None
    max_seconds: float | None
    errors: int  # 5xx
    rejected: int  # 4xx


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (*q* in 0..1) of an ascending list; None when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    """
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class RecentRequests:
    """A ring buffer of ``(time, route, status, seconds)``, newest last.

    *timer* is a monotonic clock (injected in tests); *capacity* bounds memory, so under
    heavy load a window covers the newest *capacity* requests only (its ``span_seconds``
    says how long that was).
    """

    def __init__(self, capacity: int = 20_000, *, timer: Callable[[], float] = time.monotonic):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[float, str, int, float]] = deque(maxlen=capacity)
        self._timer = self.timer = timer
        self.started = timer()
        #: The hot-path form of :meth:`record`: ``append((timer(), route, status, seconds))``
        #: is the same without a Python call in between.
        self.append = self._items.append

    def __repr__(self) -> str:
        return f"RecentRequests(held={len(self._items)}, capacity={self._items.maxlen})"

    def record(self, route: str, status: int, seconds: float) -> None:
        """Keep one answered request (called once per request)."""
        self._items.append((self._timer(), route, status, seconds))

    def window(self, seconds: float, *, exclude: Collection[str] = ()) -> RequestWindow:
        """Figures over the last *seconds*, leaving out requests to the routes in *exclude*."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        now = self._timer()
        start = max(now - seconds, self.started)
        items = list(self._items)
        if len(items) == self._items.maxlen and items and items[0][0] > start:
            start = items[0][0]  # the buffer wrapped inside the window
        durations: list[float] = []
        errors = rejected = 0
        for at, route, status, duration in items:
            if at < start or route in exclude:
                continue
            durations.append(duration)
            if status >= 500:
                errors += 1
            elif status >= 400:
                rejected += 1
        durations.sort()
        span = max(now - start, 1e-9)
        return RequestWindow(
            span_seconds=span,
            count=len(durations),
            rate=len(durations) / span,
            p50_seconds=percentile(durations, 0.50),
            p99_seconds=percentile(durations, 0.99),
            max_seconds=durations[-1] if durations else None,
            errors=errors,
            rejected=rejected,
        )
