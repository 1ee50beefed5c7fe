"""Usage accounting: one record per request, written behind the response in batches.

Two queues can carry the records to the ``usage`` table, each drained by a
:class:`~redline.cache.write_behind.WriteBehind` flusher that inserts batches every
``max_interval`` seconds or as soon as ``max_batch`` entries wait, retrying a failing database
with backoff:

* **durable** (a :class:`~redline.cache.write_behind.RedisStreamQueue`, given as
  *durable_queue*): ``await record(...)`` returns only once the record is in the Redis stream,
  so a response sent after it is never lost to a crash of this process; a restarted server
  (same consumer name) or any live one (after the queue's ``claim_idle``) flushes what the
  dead one had not written.
* **in process** (always there): ``record`` appends the row to a local list handed to an
  in-process queue once per event-loop turn, so it costs an append and never waits. What
  this queue holds is lost if the process dies. It carries every record when there is no
  durable queue, and a record the durable queue refused (Redis down, stream full): those are
  counted in ``fallbacks``, and the durable queue is skipped for ``retry_durable_after``
  seconds after a refusal so that an outage does not slow every request down.

Delivery is at least once and the insert skips request ids (the server's own, unique)
already stored, so a replayed batch does no harm. When the in-process queue stays full, rows
are dropped (and counted) rather than slowing the API down. ``close()`` flushes what is left.

Example::

    recorder = UsageRecorder(database, max_batch=200, max_interval=0.5)
    await recorder.start()
    await recorder.record(request_id="r1", route="/v1/embeddings", model="m", inputs=2,
                          tokens=9, cached_inputs=1, client="key:ab12")
    await recorder.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redline.cache.write_behind import WriteBehind, WriteQueue, WriteRecord
from redline.exceptions import CacheError, Closed, Overloaded
from redline.serve import tracing

__all__ = ["UsageRecorder", "UsageStats"]

logger = logging.getLogger(__name__)


class _Database(Protocol):
    async def insert_usage(self, records: list[dict[str, Any]]) -> None: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class UsageStats:
    """Counters of a :class:`UsageRecorder`.

    ``backlog`` is what ``backlog`` says; ``fallbacks`` counts records the durable queue
    refused that went to the in-process queue instead.
    """

    backlog: int
    recorded: int
    written: int
    dropped: int
    failures: int
    fallbacks: int


class UsageRecorder:
    """Queues usage records and writes them to the database in batches, behind the API.

    *durable_queue*, when given, carries every record it accepts (see the module docstring);
    *max_backlog* bounds the in-process queue. *backlog_gauge* is kept equal to ``backlog``.
    """

    def __init__(
        self,
        database: _Database,
        *,
        max_batch: int = 50,
        max_interval: float = 0.5,
        max_backlog: int = 10_000,
        durable_queue: WriteQueue | None = None,
        retry_durable_after: float = 1.0,
        backlog_gauge: _Gauge | None = None,
        timer: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._gauge = backlog_gauge
        self._timer = timer
        self._clock = clock
        self._writer = WriteBehind(
            None,
            self._sink,
            max_batch=max_batch,
            max_interval=max_interval,
            max_pending=max_backlog,
            put_timeout=0.05,
        )
        self._durable: WriteBehind | None = None
        if durable_queue is not None:
            self._durable = WriteBehind(
                None,
                self._durable_sink,
                max_batch=max_batch,
                max_interval=max_interval,
                queue=durable_queue,
                put_timeout=0.05,
                on_flushed=self._durable_flushed,
            )
        self._retry_durable_after = retry_durable_after
        self._durable_paused_until = float("-inf")
        self._pending: list[dict[str, Any]] = []
        self._handing: asyncio.Task[None] | None = None
        self._in_queue = 0
        self._recorded = 0
        self._written = 0
        self._dropped = 0
        self._fallbacks = 0

    @property
    def durable(self) -> bool:
        """True when records go through a durable queue first."""
        return self._durable is not None

    async def _sink(self, batch: list[WriteRecord]) -> None:
        """Insert the rows of in-process entries (lists of rows)."""
        rows = [row for record in batch for row in record.value]
        await self._database.insert_usage(rows)
        self._in_queue -= len(rows)
        self._written += len(rows)
        self._update_gauge()

    async def _durable_sink(self, batch: list[WriteRecord]) -> None:
        """Insert the rows of durable entries (one row each, from any server)."""
        await self._database.insert_usage([record.value for record in batch])
        self._written += len(batch)

    def _durable_flushed(self, batch: list[WriteRecord]) -> None:
        self._update_gauge()

    async def start(self) -> None:
        """Start the background flushers."""
        self._writer.start()
        if self._durable is not None:
            self._durable.start()

    @tracing.traced("usage.write")
    async def record(self, **fields: Any) -> None:
        """Queue one usage record (``created_at`` is added); never raises.

        With a durable queue it returns once the record is in it (or, if the queue refused
        it, in the in-process queue); without one it does not wait at all.
        """
        row = {**fields, "created_at": self._timer()}
        self._recorded += 1
        if self._durable is not None and self._clock() >= self._durable_paused_until:
            key = f"usage:{row.get('request_id') or uuid.uuid4().hex}"
            try:
                await self._durable.write(key, row)
            except (CacheError, Overloaded, OSError, TimeoutError) as exc:
                self._durable_paused_until = self._clock() + self._retry_durable_after
                logger.warning("usage record kept in process: the durable queue failed: %s", exc)
            except Closed:
                pass  # shutting down: the in-process queue is flushed by close()
            else:
                self._update_gauge()
                return
        if self._durable is not None:
            self._fallbacks += 1
        self._pending.append(row)
        if self._handing is None:
            self._handing = asyncio.get_running_loop().create_task(self._hand_over())

    async def _hand_over(self) -> None:
        """Move the rows gathered so far into the in-process queue as one entry."""
        try:
            while self._pending:
                rows, self._pending = self._pending, []
                try:
                    await self._writer.write(f"usage:{uuid.uuid4().hex}", rows)
                except (Overloaded, Closed) as exc:
                    self._dropped += len(rows)
                    logger.warning("%d usage records dropped: %s", len(rows), exc)
                    continue
                self._in_queue += len(rows)
                self._update_gauge()
        finally:
            self._handing = None

    def _update_gauge(self) -> None:
        if self._gauge is not None:
            self._gauge.set(self.backlog)

    @property
    def backlog(self) -> int:
        """Rows not yet in the database: this process's in-process rows, plus the durable
        queue's backlog as last seen (for a Redis stream, every server's unwritten rows)."""
        durable = self._durable.queue.approximate_backlog() if self._durable is not None else 0
        return len(self._pending) + self._in_queue + durable

    async def flush(self) -> None:
        """Write everything recorded so far (raises if the database keeps failing)."""
        if self._handing is not None:
            await asyncio.shield(self._handing)
        if self._pending:
            await self._hand_over()
        await self._writer.flush()
        if self._durable is not None:
            await self._durable.flush()
        self._update_gauge()

    def stats(self) -> UsageStats:
        """A snapshot of the counters."""
        failures = self._writer.stats().failures
        if self._durable is not None:
            failures += self._durable.stats().failures
        return UsageStats(
            backlog=self.backlog,
            recorded=self._recorded,
            written=self._written,
            dropped=self._dropped,
            failures=failures,
            fallbacks=self._fallbacks,
        )

    async def close(self) -> None:
        """Hand over what is left, stop the flushers, write everything they hold.

        Rows still in a durable queue when its flush fails stay there for the next server.
        """
        if self._handing is not None:
            await asyncio.shield(self._handing)
        if self._pending:
            await self._hand_over()
        try:
            await self._writer.close()
        finally:
            if self._durable is not None:
                await self._durable.close()
            self._update_gauge()

    def __repr__(self) -> str:
        s = self.stats()
        kind = "durable" if self.durable else "in-process"
        return (
            f"UsageRecorder({kind}, backlog={s.backlog}, written={s.written}, "
            f"dropped={s.dropped}, fallbacks={s.fallbacks})"
        )
