"""Write-behind: writes update the cache at once and reach the database later, in batches.

``await wb.write(key, value)`` enqueues the change (for :class:`RedisStreamQueue`, the
call returns only after ``XADD`` succeeded, so an acknowledged write survives a crash) and
then updates the cache. A background flusher takes batches — up to ``max_batch`` records,
or whatever arrived within ``max_interval`` seconds of the first — keeps only the newest
value of each key, and hands them to ``await sink(batch)``. A failing sink is retried with
exponential backoff (tenacity); records are acknowledged only after the sink succeeded.
If the retries run out the batch is kept and retried on the next cycle (counted in
``failures``), never dropped. A queue that cannot be read (a Redis stream on a frozen Redis)
or a batch that cannot be delivered never stops the flusher: it tries again after a pause,
and ``events`` (an :class:`~redline._events.EventLog`) logs one line per change between
``ok`` and ``failing`` and the first failure of each kind, counting the rest.

With :class:`MemoryQueue` (the default) pending writes are lost if the process dies; a
full queue makes ``write`` wait up to ``put_timeout`` and then raise ``Overloaded``.

Example::

    async with WriteBehind(cache, PostgresSink(pool, "users"), queue=queue) as wb:
        await wb.write("user:42", {"name": "Ada"})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential

from redline._events import EventLog
from redline.cache._queues import Delivery, MemoryQueue, RedisStreamQueue, WriteQueue, WriteRecord
from redline.cache.base import Cache
from redline.exceptions import Closed

__all__ = [
    "MemoryQueue",
    "RedisStreamQueue",
    "RetryPolicy",
    "Sink",
    "WriteBehind",
    "WriteBehindStats",
    "WriteQueue",
    "WriteRecord",
]

logger = logging.getLogger(__name__)

_STOP_GRACE = 1.0  # seconds close() lets the flusher finish its current step

Sink: TypeAlias = Callable[[list[WriteRecord]], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing sink is retried: *attempts* tries, backoff from *initial* up to *maximum*."""

    attempts: int = 5
    initial: float = 0.05
    maximum: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if not 0 <= self.initial <= self.maximum:
            raise ValueError(f"need 0 <= initial <= maximum, got {self.initial}, {self.maximum}")


@dataclass(frozen=True, slots=True)
class WriteBehindStats:
    """Counters of one :class:`WriteBehind`; ``pending`` is the backlog as last seen."""

    written: int
    flushed: int
    batches: int
    coalesced: int
    retries: int
    failures: int
    pending: int


class WriteBehind:
    """Batch writes to a *sink* behind a cache; see the module docstring.

    *cache* may be ``None`` (queue only). *ttl* is the cache TTL of written values.
    *queue* defaults to ``MemoryQueue(max_pending)``. *on_flushed*, if given, is called with
    the batch after the sink accepted it and the queue acknowledged it.
    """

    def __init__(
        self,
        cache: Cache | None,
        sink: Sink,
        *,
        max_batch: int = 500,
        max_interval: float = 0.5,
        max_pending: int = 10_000,
        queue: WriteQueue | None = None,
        retry: RetryPolicy | None = None,
        put_timeout: float = 1.0,
        ttl: float | None = None,
        on_flushed: Callable[[list[WriteRecord]], object] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_interval <= 0:
            raise ValueError(f"max_interval must be > 0, got {max_interval}")
        if put_timeout < 0:
            raise ValueError(f"put_timeout must be >= 0, got {put_timeout}")
        self.cache = cache
        self.sink = sink
        self.max_batch = max_batch
        self.max_interval = max_interval
        self.queue: WriteQueue = queue if queue is not None else MemoryQueue(max_pending)
        self.retry = retry or RetryPolicy()
        self.put_timeout = put_timeout
        self.ttl = ttl
        self.on_flushed = on_flushed
        self._held: list[Delivery] = []  # taken, not yet accepted by the sink
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[None] | None = None  # the flusher's read in flight
        self._closed = False
        self.events = EventLog(logger, "write-behind")
        self._written = self._flushed = self._batches = 0
        self._coalesced = self._retries = self._failures = 0

    def start(self) -> None:
        """Start the background flusher (``write`` and ``async with`` do it for you)."""
        if self._closed:
            raise Closed("write-behind is closed")
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="write-behind flusher")

    async def write(self, key: str, value: Any) -> None:
        """Enqueue ``key = value`` for the sink, then update the cache.

        Returns once the change is in the queue (durably for a Redis stream). A cache
        error after that still raises, but the change will reach the sink.
        """
        if self._closed:
            raise Closed("write-behind is closed")
        self.start()
        await self.queue.put(key, value, timeout=self.put_timeout)
        self._written += 1
        if self.cache is not None:
            await self.cache.set(key, value, self.ttl)

    async def flush(self) -> None:
        """Hand everything the queue can give now to the sink; raise if the sink keeps failing.

        Records the flusher's own read has already taken from a Redis stream, but not yet
        received, are waited for: when the queue still holds records that nothing here holds,
        the flusher's read in flight is let land (once) before giving up.
        """
        async with self._lock:
            waited = False
            while True:
                self._held += await self.queue.take(self.max_batch, 0)
                if self._held:
                    await self._deliver_held()
                    continue
                reading = self._reading
                if waited or reading is None or await self.queue.backlog() == 0:
                    return
                await asyncio.wait({reading})
                waited = True

    async def backlog(self) -> int:
        """Records written but not yet accepted by the sink (asks the queue)."""
        return await self.queue.backlog()

    async def _run(self) -> None:
        """The flusher: gather up to ``max_batch`` or ``max_interval`` after the first, deliver.

        Taken records go straight into ``_held`` (never a local), so cancelling the flusher
        (``close``) loses nothing; waiting for records does not hold the delivery lock, so
        ``flush`` never waits for a gathering interval.
        """
        loop = asyncio.get_running_loop()
        first_at = 0.0
        while not self._closed:
            if not self._held:
                first_at = 0.0
            elif not first_at:  # records left by a failed delivery or by flush
                first_at = loop.time()
            wait = self.max_interval if not first_at else first_at + self.max_interval - loop.time()
            if self._held and (wait <= 0 or len(self._held) >= self.max_batch):
                try:
                    async with self._lock:
                        if self._held:
                            await self._deliver_held()
                    self.events.state("ok", level=logging.INFO)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the batch is kept for a retry
                    self.events.state("failing", "a batch could not be delivered")
                    self.events.failure("flush", exc)
                    await asyncio.sleep(self.retry.maximum)
                first_at = 0.0
                continue
            # Short waits: a close() is noticed within a quarter of the stop grace.
            wait = min(wait, _STOP_GRACE / 4)
            self._reading = asyncio.ensure_future(
                self._take_into_held(self.max_batch - len(self._held), wait)
            )
            try:
                await self._reading
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The queue's store did not answer (a Redis stream on a frozen or dead Redis):
                # counted, logged once per run, and read again after a pause, so the flusher
                # outlives the outage instead of dying with an unretrieved exception.
                self.events.state("failing", "its queue does not answer reads")
                self.events.failure("queue read", exc)
                await asyncio.sleep(self.retry.initial)
            else:
                if not self._held:  # nothing waits for a retry either
                    self.events.state("ok", level=logging.INFO)
            finally:
                self._reading = None

    async def _take_into_held(self, max_items: int, timeout: float) -> None:
        """The flusher's read: what it takes lands in ``_held`` even if nobody awaits it."""
        self._held += await self.queue.take(max_items, timeout)

    async def _deliver_held(self) -> None:
        """Coalesce the oldest held batch per key, run the sink with retries, acknowledge it."""
        batch = self._held[: self.max_batch]
        newest: dict[str, WriteRecord] = {}
        for delivery in batch:
            record = delivery.record
            current = newest.get(record.key)
            if current is None or record.seq >= current.seq:
                newest[record.key] = record
        records = list(newest.values())
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait_exponential(multiplier=self.retry.initial, max=self.retry.maximum),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            await retrying(self.sink, records)
        except Exception:
            self._failures += 1
            raise
        await self.queue.ack(batch)
        del self._held[: len(batch)]
        self._coalesced += len(batch) - len(records)
        self._flushed += len(records)
        self._batches += 1
        if self.on_flushed is not None:
            self.on_flushed(records)

    def _count_retry(self, state: RetryCallState) -> None:
        self._retries += 1
        logger.warning("write-behind sink failed (attempt %d), retrying", state.attempt_number)

    async def close(self) -> None:
        """Stop taking writes, flush what is pending, stop the flusher. Raises if the sink fails."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            # The flusher sees the flag within one queue wait; cancel only a slow one (a
            # cancelled blocking Redis read is not always interrupted by redis-py).
            done, _ = await asyncio.wait({self._task}, timeout=_STOP_GRACE)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        try:
            await self.flush()
        finally:
            await self.queue.close()

    def stats(self) -> WriteBehindStats:
        return WriteBehindStats(
            written=self._written,
            flushed=self._flushed,
            batches=self._batches,
            coalesced=self._coalesced,
            retries=self._retries,
            failures=self._failures,
            pending=self.queue.approximate_backlog(),
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._task else "idle"
        s = self.stats()
        return (
            f"<WriteBehind {state} pending~{s.pending} flushed={s.flushed} "
            f"batches={s.batches} failures={s.failures}>"
        )

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
