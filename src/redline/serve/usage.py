"""Usage accounting: one record per request, written behind the response in batches.

Requests never wait for the database: :meth:`UsageRecorder.record` appends to a bounded
in-process buffer, and a background task inserts the buffer every ``max_interval`` seconds
or as soon as ``max_batch`` records are waiting. When the buffer is full the oldest record is
dropped (and counted) rather than slowing the API down. ``close()`` flushes what is left.

Example::

    recorder = UsageRecorder(database, max_batch=200, max_interval=0.5)
    await recorder.start()
    recorder.record(request_id="r1", route="/v1/embeddings", model="m", inputs=2,
                    tokens=9, cached_inputs=1, client="key:ab12")
    await recorder.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["UsageRecorder", "UsageStats"]

logger = logging.getLogger(__name__)


class _Sink(Protocol):
    async def insert_usage(self, records: list[dict[str, Any]]) -> None: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class UsageStats:
    """Counters of a :class:`UsageRecorder`."""

    backlog: int
    written: int
    dropped: int
    failed_flushes: int


class UsageRecorder:
    """Buffers usage records and inserts them in batches from a background task."""

    def __init__(
        self,
        sink: _Sink,
        *,
        max_batch: int = 200,
        max_interval: float = 0.5,
        max_backlog: int = 100_000,
        backlog_gauge: _Gauge | None = None,
        timer: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_interval <= 0:
            raise ValueError(f"max_interval must be > 0, got {max_interval}")
        self._sink = sink
        self._max_batch = max_batch
        self._max_interval = max_interval
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_backlog)
        self._gauge = backlog_gauge
        self._timer = timer
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._written = 0
        self._dropped = 0
        self._failed = 0

    async def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redline-usage-writer")

    def record(self, **fields: Any) -> None:
        """Queue one usage record (``created_at`` is added); never blocks."""
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped += 1
        self._buffer.append({**fields, "created_at": self._timer()})
        if self._gauge is not None:
            self._gauge.set(len(self._buffer))
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._max_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered now; on failure keep the records for the next try."""
        async with self._flush_lock:
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(self._max_batch, len(self._buffer)))
                ]
                try:
                    await self._sink.insert_usage(batch)
                except Exception:
                    self._failed += 1
                    self._buffer.extendleft(reversed(batch))
                    logger.warning("usage flush failed; %d records kept", len(batch), exc_info=True)
                    break
                self._written += len(batch)
            if self._gauge is not None:
                self._gauge.set(len(self._buffer))

    def stats(self) -> UsageStats:
        """A snapshot of the counters."""
        return UsageStats(len(self._buffer), self._written, self._dropped, self._failed)

    async def close(self) -> None:
        """Stop the flusher and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def __repr__(self) -> str:
        s = self.stats()
        return f"UsageRecorder(backlog={s.backlog}, written={s.written}, dropped={s.dropped})"
