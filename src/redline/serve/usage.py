"""Usage accounting: one record per request, written behind the response in batches.

Requests never wait for the database: :meth:`UsageRecorder.record` appends the row to a
local list, which goes onto a :class:`~redline.cache.write_behind.WriteBehind` queue (no
cache, in-process queue) as one entry per event-loop turn; the write-behind flusher inserts
batches into the ``usage`` table every ``max_interval`` seconds or as soon as ``max_batch``
entries wait, retrying a failing database with backoff. Delivery is at least once and the
insert skips request ids already stored, so a replayed batch does no harm. When the queue
stays full, rows are dropped (and counted) rather than slowing the API down. ``close()``
flushes what is left.

Example::

    recorder = UsageRecorder(database, max_batch=200, max_interval=0.5)
    await recorder.start()
    recorder.record(request_id="r1", route="/v1/embeddings", model="m", inputs=2,
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

from redline.cache.write_behind import WriteBehind, WriteRecord
from redline.exceptions import Closed, Overloaded

__all__ = ["UsageRecorder", "UsageStats"]

logger = logging.getLogger(__name__)


class _Database(Protocol):
    async def insert_usage(self, records: list[dict[str, Any]]) -> None: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class UsageStats:
    """Counters of a :class:`UsageRecorder`."""

    backlog: int
    recorded: int
    written: int
    dropped: int
    failures: int


class UsageRecorder:
    """Queues usage records and writes them to the database in batches, behind the API.

    ``record`` is synchronous and O(1): rows gather in a local list that is handed to the
    write-behind queue as one entry per event-loop turn, so the per-request cost is an append.
    """

    def __init__(
        self,
        database: _Database,
        *,
        max_batch: int = 50,
        max_interval: float = 0.5,
        max_backlog: int = 10_000,
        backlog_gauge: _Gauge | None = None,
        timer: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._gauge = backlog_gauge
        self._timer = timer
        self._writer = WriteBehind(
            None,
            self._sink,
            max_batch=max_batch,
            max_interval=max_interval,
            max_pending=max_backlog,
            put_timeout=0.05,
        )
        self._pending: list[dict[str, Any]] = []
        self._handing: asyncio.Task[None] | None = None
        self._in_queue = 0
        self._recorded = 0
        self._written = 0
        self._dropped = 0

    async def _sink(self, batch: list[WriteRecord]) -> None:
        """Insert the rows of every queued entry (the write-behind flusher calls this)."""
        rows = [row for record in batch for row in record.value]
        await self._database.insert_usage(rows)
        self._in_queue -= len(rows)
        self._written += len(rows)
        self._update_gauge()

    async def start(self) -> None:
        """Start the background flusher."""
        self._writer.start()

    def record(self, **fields: Any) -> None:
        """Queue one usage record (``created_at`` is added); never blocks, never raises."""
        self._pending.append({**fields, "created_at": self._timer()})
        self._recorded += 1
        if self._handing is None:
            self._handing = asyncio.get_running_loop().create_task(self._hand_over())

    async def _hand_over(self) -> None:
        """Move the rows gathered so far into the write-behind queue as one entry."""
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
        """Rows recorded but not yet in the database."""
        return len(self._pending) + self._in_queue

    async def flush(self) -> None:
        """Write everything recorded so far (raises if the database keeps failing)."""
        if self._handing is not None:
            await asyncio.shield(self._handing)
        if self._pending:
            await self._hand_over()
        await self._writer.flush()
        self._update_gauge()

    def stats(self) -> UsageStats:
        """A snapshot of the counters."""
        return UsageStats(
            backlog=self.backlog,
            recorded=self._recorded,
            written=self._written,
            dropped=self._dropped,
            failures=self._writer.stats().failures,
        )

    async def close(self) -> None:
        """Hand over what is left, stop the flusher, write everything."""
        if self._handing is not None:
            await asyncio.shield(self._handing)
        if self._pending:
            await self._hand_over()
        await self._close_writer()
        self._update_gauge()

    async def _close_writer(self) -> None:
        """``WriteBehind.close()``: flushes what is queued and stops its flusher."""
        await self._writer.close()

    def __repr__(self) -> str:
        s = self.stats()
        return f"UsageRecorder(backlog={s.backlog}, written={s.written}, dropped={s.dropped})"
