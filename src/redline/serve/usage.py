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
  counted in ``fallbacks``.

**When the durable queue's Redis stops answering** (frozen, overloaded past reason), a
request must choose between waiting for it and answering with its record held in memory.
The choice follows what is known of the Redis node, never a new per-write deadline:

* the node is *known stalled* when its circuit breaker (*durable_breaker*, the cache's,
  shared with every call to that node) is open or half-open — the cache's calls found it
  silent for ``stall_timeout`` (0.25 s by default) or failing — **and** the stream itself
  has not taken a record for ``durable_silence`` seconds (0.25 s) or a write to it failed
  since it last took one. A breaker that opened while records still go through (a loaded
  box where the cache's calls looked stalled) is not enough; a record that goes through
  closes it.
* a write in flight **waits for its answer**, however slow: it ends only with the answer,
  the client's own failure (its ``socket_timeout``, 0.5 s by default, as before), or the
  node becoming known stalled. A slow-but-answering Redis keeps every record durable, with
  no per-write deadline of its own.
* a record made while the node is known stalled **skips the stream** at once: the row goes
  to the in-process queue (counted in ``fallbacks``); when the breaker's probe is due one
  record is sent to the stream in the background, so the durable path comes back with the
  node even if nothing else reaches it.

A write given up on may still land in the stream later; its row is then both there and in
process, and is inserted once. So during a Redis freeze the requests whose records were in
flight when it began wait until the breaker opens (about ``stall_timeout``); the requests
answered after that, until Redis answers again, have their usage rows in memory only: a
crash of this process in that window, before the in-process queue reached the database
(``max_interval``), loses those rows. Without a
breaker the old rule holds: after a refusal the durable queue is skipped for
``retry_durable_after`` seconds. Failures are counted through an
:class:`~redline._events.EventLog` (a line per change of where records go, the first failure
of a run), not logged per record.

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

from redline._events import EventLog
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.cache.write_behind import WriteBehind, WriteQueue, WriteRecord
from redline.exceptions import CacheUnavailable, Closed, Overloaded
from redline.serve import tracing

__all__ = ["DEFAULT_MAX_BATCH", "UsageRecorder", "UsageStats"]

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


#: Entries per insert at most. An insert costs the server 1-2 ms of CPU whatever its size
#: (SQLAlchemy and the SQLite commit; ~10 us more per row): under load, batches of 50 entries
#: were ~100 inserts a second, 10-20% of a core; a batch still waits at most ``max_interval``.
DEFAULT_MAX_BATCH = 1000


class UsageRecorder:
    """Queues usage records and writes them to the database in batches, behind the API.

    *durable_queue*, when given, carries every record it accepts (see the module docstring);
    *durable_breaker* returns the circuit breaker of the Redis node that holds it (asked per
    record: a Cluster's node may change); with *durable_silence* it decides when a record
    stops waiting for the stream.
    *max_backlog* bounds the in-process queue. *backlog_gauge* is kept equal to ``backlog``.
    """

    def __init__(
        self,
        database: _Database,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_interval: float = 0.5,
        max_backlog: int = 10_000,
        durable_queue: WriteQueue | None = None,
        durable_breaker: Callable[[], CircuitBreaker] | None = None,
        durable_silence: float = 0.25,
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
        self._breaker = durable_breaker
        self._durable_silence = durable_silence
        self._answered_at = -float("inf")  # clock() when the stream last took a record
        self._failed_since_answer = False  # a write failed (Redis unreachable) since then
        self._probe: asyncio.Task[None] | None = None  # a record sent while the breaker is open
        self.events = EventLog(logger, "usage durable queue")
        self._retry_durable_after = retry_durable_after
        self._durable_paused_until = float("-inf")
        self._pending: list[dict[str, Any]] = []
        self._handed = 0  # entries handed to the in-process queue: their keys
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

    async def record(self, **fields: Any) -> None:
        """Queue one usage record (``created_at`` is added); never raises.

        With a durable queue it returns once the record is in it, or once the write failed,
        or at once while the queue's Redis is known stalled (then the record waits in
        process; see the module docstring); without one it does not wait at all.
        """
        row = {**fields, "created_at": self._timer()}
        self._recorded += 1
        if self._durable is None:  # an append: no coroutine of its own, nothing awaited
            with tracing.span("usage.write"):
                self._keep_in_process(row)
            return
        with tracing.span("usage.write"):
            await self._record_durable(self._durable, row)

    async def _record_durable(self, durable: WriteBehind, row: dict[str, Any]) -> None:
        key = f"usage:{row.get('request_id') or uuid.uuid4().hex}"
        breaker = self._breaker() if self._breaker is not None else None
        if breaker is not None and self._known_stalled(breaker):
            if self._probe is None and self._probe_due(breaker):
                task = asyncio.get_running_loop().create_task(
                    self._send_probe(durable, breaker, key, row)
                )
                self._probe = task
                return
        elif self._clock() >= self._durable_paused_until:
            try:
                await self._write_durable(durable, breaker, key, row)
            except Closed:
                pass  # shutting down: the in-process queue is flushed by close()
            except Exception as exc:  # never raises: whatever the client failed with
                self._durable_refused(breaker, exc)
            else:
                self._update_gauge()
                return
        self._fallbacks += 1
        self._keep_in_process(row)

    def _known_stalled(self, breaker: CircuitBreaker) -> bool:
        """The stream's node is known stalled: its breaker is not closed, and the stream
        itself has not taken a record for ``durable_silence`` seconds or failed one since it
        last took one (a breaker opened while records still go through does not count)."""
        return breaker.state is not BreakerState.CLOSED and (
            self._failed_since_answer or self._clock() - self._answered_at >= self._durable_silence
        )

    async def _write_durable(
        self, durable: WriteBehind, breaker: CircuitBreaker | None, key: str, row: dict[str, Any]
    ) -> None:
        """Put *row* in the durable queue. The write ends with Redis's answer or the client's
        own failure (its socket timeout), or when *breaker* opens while the stream is known
        stalled (then the write may still land later: the row, also kept in process, is
        inserted once). The outcome is reported to *breaker*."""
        try:
            if breaker is None:
                await durable.write(key, row)
                written = True
            else:
                written = await self._write_watched(durable, breaker, key, row)
        except CacheUnavailable as exc:
            self._failed_since_answer = True
            if breaker is not None:
                breaker.record_failure(exc)
            raise
        if not written:  # the breaker knows already
            self._failed_since_answer = True
            name = breaker.name if breaker is not None else "?"
            raise CacheUnavailable(f"the usage stream's Redis is known stalled ({name!r} open)")
        self._answered_at = self._clock()
        self._failed_since_answer = False
        if breaker is not None:
            breaker.record_success()  # the node answers: closes a breaker opened meanwhile
        self.events.state("durable", "records reach the stream", level=logging.INFO)

    async def _write_watched(
        self, durable: WriteBehind, breaker: CircuitBreaker, key: str, row: dict[str, Any]
    ) -> bool:
        """``durable.write``; ``False`` if given up because *breaker* opened while the
        stream was known stalled (it keeps waiting if the stream still answers)."""
        write = asyncio.ensure_future(durable.write(key, row))
        write.add_done_callback(_retrieve)
        guard = breaker.guard(awaits_answer=False)  # a slow write alone is not a stall
        try:
            async with guard:
                await asyncio.shield(write)
            return True
        except CacheUnavailable:
            if not guard.aborted:
                raise
        if self._known_stalled(breaker):
            return False
        await write  # the breaker opened, but records still go through: keep waiting
        return True

    def _durable_refused(self, breaker: CircuitBreaker | None, exc: BaseException) -> None:
        if breaker is None or not isinstance(exc, CacheUnavailable):
            # No breaker to tell when to try again, or Redis answered "full": pause.
            self._durable_paused_until = self._clock() + self._retry_durable_after
        self.events.state("in process", "the durable queue does not take records")
        self.events.failure("durable write", exc)

    @staticmethod
    def _probe_due(breaker: CircuitBreaker) -> bool:
        try:
            breaker.allow()  # lets one call through once the breaker's reset_timeout passed
        except CacheUnavailable:
            return False
        return True

    async def _send_probe(
        self, durable: WriteBehind, breaker: CircuitBreaker, key: str, row: dict[str, Any]
    ) -> None:
        """The breaker's probe: *row* to the durable queue in the background (the request
        that made it did not wait); in process if it fails."""
        try:
            await self._write_durable(durable, breaker, key, row)
        except Exception as exc:
            if not isinstance(exc, Closed):
                self.events.failure("durable write", exc)
            self._fallbacks += 1
            self._keep_in_process(row)
        else:
            self._update_gauge()
        finally:
            self._probe = None

    def _keep_in_process(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if self._handing is None:
            self._handing = asyncio.get_running_loop().create_task(self._hand_over())

    async def _hand_over(self) -> None:
        """Move the rows gathered so far into the in-process queue as one entry."""
        try:
            while self._pending:
                rows, self._pending = self._pending, []
                try:
                    self._handed += 1
                    await self._writer.write(f"usage:{self._handed}", rows)
                except (Overloaded, Closed) as exc:
                    self._dropped += len(rows)
                    self.events.failure("in-process queue", f"{len(rows)} rows dropped: {exc}")
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
        if self._probe is not None:
            await asyncio.shield(self._probe)
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
        if self._probe is not None:
            await asyncio.shield(self._probe)
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


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a durable write's outcome as seen (a write given up on may fail later)."""
    if not task.cancelled():
        task.exception()
