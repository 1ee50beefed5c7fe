"""Private: a TieredCache's invalidations, published in the background, coalesced, fail-fast.

A write only records what changed (:meth:`InvalidationPublisher.put`, synchronous, no I/O);
one background task sends everything recorded since its last message as one
:class:`~redline.cache.invalidation.InvalidationMessage`. Each send is bounded by
``timeout`` and goes through its own :class:`~redline.cache.breaker.CircuitBreaker`: while
the channel fails, what is pending is kept (merged with what comes next) and sent when a
probe gets through, so a frozen Redis costs a write nothing and a lost message is sent late
rather than never. The pending set is bounded: past ``max_keys`` keys it collapses into one
full flush. ``close()`` sends what is pending within ``timeout`` and counts the rest as
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from redline._events import EventLog
from redline.cache._stopping import stop_task
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.cache.invalidation import Invalidation, InvalidationMessage
from redline.exceptions import CacheUnavailable

__all__ = ["InvalidationPublisher"]

logger = logging.getLogger("redline.cache.invalidation")


class InvalidationPublisher:
    """Background, coalescing publisher of one cache's invalidations (module docstring)."""

    def __init__(
        self,
        channel: Invalidation,
        origin: str,
        *,
        timeout: float = 1.0,
        max_keys: int = 10_000,
        breaker: CircuitBreaker | None = None,
        events: EventLog | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.channel = channel
        self.origin = origin
        self.timeout = timeout
        self.max_keys = max_keys
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=2, reset_timeout=0.5, name="invalidation-publish"
        )
        self.events = events or EventLog(logger, "invalidation publisher")
        self._keys: dict[str, None] = {}
        self._patterns: dict[str, None] = {}
        self._tags: dict[str, None] = {}
        self._flush = False
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return (
            f"<InvalidationPublisher pending={self.pending} published={self.published} "
            f"breaker={self.breaker.state.value} dropped={self.dropped}>"
        )

    @property
    def pending(self) -> int:
        """Changes recorded and not sent yet (a flush counts as one)."""
        return len(self._keys) + len(self._patterns) + len(self._tags) + int(self._flush)

    @property
    def healthy(self) -> bool:
        """False while the last sends failed (the breaker is not closed)."""
        return self.breaker.state is BreakerState.CLOSED

    def put(
        self,
        *,
        keys: Iterable[str] = (),
        patterns: Iterable[str] = (),
        tags: Iterable[str] = (),
        flush: bool = False,
    ) -> None:
        """Record changes to announce; returns at once (the send happens in the background)."""
        if flush:
            self._flush = True
        if not self._flush:
            self._keys.update(dict.fromkeys(keys))
            self._patterns.update(dict.fromkeys(patterns))
            if len(self._keys) + len(self._patterns) > self.max_keys:
                self._flush = True
        if self._flush:
            self._keys.clear()
            self._patterns.clear()
        self._tags.update(dict.fromkeys(tags))
        if self.pending:
            self._idle.clear()
            self._wakeup.set()
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name="redline-invalidation-publisher"
                )

    async def wait_sent(self, timeout: float) -> bool:
        """Wait (up to *timeout*) until nothing is pending; whether that happened."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()

    async def close(self) -> None:
        """Send what is pending (within ``timeout``), then stop; the rest is counted dropped."""
        if self._task is not None and not self._task.done():
            if self.pending and self.breaker.state is BreakerState.OPEN:
                self.breaker.reset()  # one last try, even mid-outage
            await self.wait_sent(self.timeout)
            if not await stop_task(self._task, self.timeout + 1.0):
                self.events.failure("close", "the publisher did not stop when cancelled")
        self._task = None
        if self.pending:
            self.dropped += self.pending
            self.events.failure("close", f"{self.pending} invalidations not sent at close")
            self._clear()

    # -- the background task ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                self.breaker.allow()
            except CacheUnavailable:
                await asyncio.sleep(self.breaker.reset_timeout / 4)
                continue
            message = self._take()
            try:
                await asyncio.wait_for(self.channel.publish(message), self.timeout)
            except asyncio.CancelledError:
                self._restore(message)
                raise
            except Exception as exc:  # any failure: keep the message, let the breaker decide
                self._restore(message)
                self.breaker.record_failure(exc)
                self.events.failure("publish", exc)
                if self.breaker.state is BreakerState.OPEN:
                    self.events.state("failing", f"{self.breaker.stats().last_error}")
                continue
            self.breaker.record_success()
            self.published += 1
            self.events.state("ok", level=logging.INFO)

    def _take(self) -> InvalidationMessage:
        message = InvalidationMessage(
            origin=self.origin,
            keys=tuple(self._keys),
            patterns=tuple(self._patterns),
            tags=tuple(self._tags),
            flush=self._flush,
        )
        self._clear()
        return message

    def _restore(self, message: InvalidationMessage) -> None:
        self.put(
            keys=message.keys, patterns=message.patterns, tags=message.tags, flush=message.flush
        )

    def _clear(self) -> None:
        self._keys.clear()
        self._patterns.clear()
        self._tags.clear()
        self._flush = False
