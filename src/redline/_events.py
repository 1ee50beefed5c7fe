"""Rate-limited health logging: one line per state change, repeated failures counted, not logged.

A component that can fail thousands of times a second (a Redis client during an outage, an
invalidation publisher) reports through an :class:`EventLog` instead of calling the logger:

>>> events = EventLog(logging.getLogger("redline.cache.redis"), "redis")
>>> events.failure("get", exc)          # the first of a run is logged, the rest are counted
>>> events.state("open", "5 consecutive failures")   # logged only when the state changes
>>> events.state("closed")              # back to normal: logged with how many were suppressed
>>> events.counts()                     # {"failure:get": 1, "state:open": 1, "state:closed": 1}

The number of lines an outage writes is bounded by its number of state changes plus one per
failure cause per ``interval`` seconds, whatever the request rate. :meth:`counts` feeds the
server's ``/metrics`` (through a tier's :class:`~redline.cache.base.TierStats` ``events``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["EventLog"]


class EventLog:
    """State changes and counted failures of one component (see the module docstring).

    ``interval``: the least time between two lines about the same failure cause; ``timer``:
    the clock (seconds, monotonic), injectable for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        component: str,
        *,
        interval: float = 60.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.logger = logger
        self.component = component
        self.interval = interval
        self._timer = timer
        self._state: str | None = None
        self._counts: dict[str, int] = {}
        # cause -> (time of its last line, failures since that line)
        self._pending: dict[str, tuple[float, int]] = {}

    @property
    def current(self) -> str | None:
        """The last state reported (``None`` before the first)."""
        return self._state

    def state(self, state: str, reason: str = "", *, level: int = logging.WARNING) -> bool:
        """Report the component's state; logs (at *level*) and counts only a change. Returns
        whether it was one. A change also flushes the failure counts held back so far."""
        if state == self._state:
            return False
        previous, self._state = self._state, state
        self._bump(f"state:{state}")
        suppressed = self._flush_pending()
        if previous is None and level <= logging.INFO:
            return True  # the initial healthy state is not news
        detail = f": {reason}" if reason else ""
        more = f" ({suppressed})" if suppressed else ""
        self.logger.log(level, "%s is %s%s%s", self.component, state, detail, more)
        return True

    def failure(self, cause: str, exc: BaseException | str | None = None) -> None:
        """Count one failure of *cause*; log the first of a run and then at most one summary
        per ``interval``."""
        self._bump(f"failure:{cause}")
        now = self._timer()
        last = self._pending.get(cause)
        if last is None:
            self._pending[cause] = (now, 0)
            self.logger.warning("%s: %s failed: %s", self.component, cause, _describe(exc))
            return
        logged_at, since = last
        if now - logged_at < self.interval:
            self._pending[cause] = (logged_at, since + 1)
            return
        self._pending[cause] = (now, 0)
        self.logger.warning(
            "%s: %s failed %d more times in the last %.0f s (last: %s)",
            self.component,
            cause,
            since + 1,
            now - logged_at,
            _describe(exc),
        )

    def counts(self) -> dict[str, int]:
        """Every event counted so far: ``"failure:CAUSE"`` and ``"state:STATE"`` keys."""
        return dict(self._counts)

    def _bump(self, event: str) -> None:
        self._counts[event] = self._counts.get(event, 0) + 1

    def _flush_pending(self) -> str:
        """Forget the failure runs; describe the failures that were counted but not logged."""
        held = {cause: since for cause, (_, since) in self._pending.items() if since}
        self._pending.clear()
        return ", ".join(f"{n} more {cause} failures" for cause, n in sorted(held.items()))

    def __repr__(self) -> str:
        return f"<EventLog component={self.component!r} state={self._state!r}>"


def _describe(exc: BaseException | str | None) -> str:
    if exc is None:
        return "no detail"
    if isinstance(exc, str):
        return exc
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
