"""Usage accounting: one record per request, written behind the response in batches.

Requests never wait for the database: :meth:`UsageRecorder.record` puts the record on a
:class:`~redline.cache.write_behind.WriteBehind` queue (no cache, in-process queue), whose
flusher inserts batches into the ``usage`` table every ``max_interval`` seconds or as soon
as ``max_batch`` records are waiting, retrying a failing database with backoff. When the
queue stays full the record is dropped (and counted) rather than slowing the API down.
``close()`` flushes what is left.

Example::

    recorder = UsageRecorder(database, max_batch=200, max_interval=0.5)
    await recorder.start()
    await recorder.record(request_id="r1", route="/v1/embeddings", model="m", inputs=2,
                          tokens=9, cached_inputs=1, client="key:ab12")
    await recorder.close()
"""

from __future__ import annotations

import logging
import time
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
    """Queues usage records and writes them to the database in batches, behind the API."""

    def __init__(
        self,
        database: _Database,
        *,
        max_batch: int = 200,
        max_interval: float = 0.5,
        max_backlog: int = 100_000,
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
            put_timeout=0.01,
        )
        self._recorded = 0
        self._dropped = 0

    async def _sink(self, batch: list[WriteRecord]) -> None:
        """Insert one batch (the write-behind flusher calls this, with retries)."""
        await self._database.insert_usage([record.value for record in batch])
        self._update_gauge()

    async def start(self) -> None:
        """Start the background flusher."""
        self._writer.start()

    async def record(self, **fields: Any) -> None:
        """Queue one usage record (``request_id`` is the key; ``created_at`` is added)."""
        row = {**fields, "created_at": self._timer()}
        try:
            await self._writer.write(str(fields["request_id"]), row)
        except (Overloaded, Closed) as exc:
            self._dropped += 1
            logger.warning("usage record dropped: %s", exc)
            return
        self._recorded += 1
        self._update_gauge()

    def _update_gauge(self) -> None:
        if self._gauge is not None:
            self._gauge.set(self._writer.queue.approximate_backlog())

    async def flush(self) -> None:
        """Write everything queued now (raises if the database keeps failing)."""
        await self._writer.flush()
        self._update_gauge()

    def stats(self) -> UsageStats:
        """A snapshot of the counters."""
        inner = self._writer.stats()
        return UsageStats(
            backlog=self._writer.queue.approximate_backlog(),
            recorded=self._recorded,
            written=inner.flushed,
            dropped=self._dropped,
            failures=inner.failures,
        )

    async def close(self) -> None:
        """Stop the flusher and write what is left."""
        await self._writer.close()
        self._update_gauge()

    def __repr__(self) -> str:
        s = self.stats()
        return f"UsageRecorder(backlog={s.backlog}, written={s.written}, dropped={s.dropped})"
