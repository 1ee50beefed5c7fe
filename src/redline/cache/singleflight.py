"""In-process single-flight: concurrent callers of one key share one execution.

>>> flight = SingleFlight()
>>> results = await asyncio.gather(*(flight.do("k", load) for _ in range(100)))
>>> flight.stats().executions
1

The work runs in its own task. A waiter that is cancelled stops waiting but does not cancel
the work the others still wait for; when every waiter has gone, the work is cancelled.
An exception is shared by every waiter of that execution; the next call starts afresh.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight", "SingleFlightStats"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SingleFlightStats:
    """Counters of a :class:`SingleFlight`: ``calls`` = ``executions`` + ``shared``."""

    calls: int
    executions: int
    shared: int
    in_flight: int


class _Flight(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[T]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight:
    """Deduplicates concurrent calls by key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[Any]] = {}
        self._calls = 0
        self._executions = 0
        self._shared = 0

    def __repr__(self) -> str:
        return (
            f"<SingleFlight in_flight={len(self._flights)} calls={self._calls} "
            f"executions={self._executions} shared={self._shared}>"
        )

    def stats(self) -> SingleFlightStats:
        return SingleFlightStats(
            calls=self._calls,
            executions=self._executions,
            shared=self._shared,
            in_flight=len(self._flights),
        )

    def in_flight(self, key: Hashable) -> bool:
        """Whether an execution for *key* is running now."""
        return key in self._flights

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` once for every concurrent caller of *key*; all get its outcome."""
        self._calls += 1
        flight: _Flight[T] | None = self._flights.get(key)
        if flight is None:
            task: asyncio.Future[T] = asyncio.ensure_future(fn())
            flight = _Flight(task)
            self._flights[key] = flight
            task.add_done_callback(functools.partial(self._forgotten, key, flight))
            self._executions += 1
        else:
            self._shared += 1
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every waiter is gone (cancelled): nobody wants the result any more.
                self._forget(key, flight)
                flight.task.cancel()

    def _forgotten(self, key: Hashable, flight: _Flight[Any], _task: object) -> None:
        self._forget(key, flight)

    def _forget(self, key: Hashable, flight: _Flight[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
