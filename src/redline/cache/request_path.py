"""The cache as a request path uses it: reads that give up after a budget, writes behind
the response.

A server must not make its clients wait on a cache that stopped answering. Until the
circuit breaker of a frozen Redis notices the silence (its ``stall_timeout``), every request
that awaits a cache read or write waits with it. :class:`RequestPathCache` wraps the cache
that the request path uses:

* ``get_many`` waits at most ``read_budget`` seconds for what L1 does not have. A read not
  answered in time counts as a miss for this request; it goes on in the background and, for
  a :class:`~redline.cache.tiered.TieredCache`, fills L1 when it returns, under the tiered
  cache's fill rules: a late read never stores a value older than a write that completed.
* ``set_many`` queues the values and returns at once. One background writer sends what
  waits, one ``set_many`` per TTL. At most ``max_queued`` keys wait: past that a write is
  dropped (and counted), never awaited. Keys still waiting are served to this process's
  later reads, so a repeated input does not miss because its value is still on the way.
* Failures go through an :class:`~redline._events.EventLog` (``/metrics``:
  ``redline_cache_events_total{tier="request_path"}``): the state turns ``degraded`` when an
  L2 read raises (Redis down, breaker open) and ``ok`` when a read started after that one
  answers (a straggler never flips it back), one line each; reads over budget, failed reads,
  failed and dropped writes are counted, the first of a run logged. An outage writes a
  handful of lines, whatever the request rate.

With ``read_budget=None`` and ``max_queued=0`` (for a cache in process, which never waits)
reads and writes are awaited as they are, failures still counted.

Example::

    cache = RequestPathCache(tiered, read_budget=0.03, max_queued=1024)
    found = await cache.get_many(["k1", "k2"])    # within ~30 ms, whatever Redis does
    await cache.set_many({"k2": vector}, ttl=3600) # queued: returns at once
    await cache.close()                            # sends what waits (within close_timeout)
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redline import _trace_hooks
from redline._events import EventLog
from redline.cache.base import Cache, CacheStats, TierStats
from redline.cache.tiered import TieredCache
from redline.exceptions import CacheError

__all__ = ["RequestPathCache", "RequestPathStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestPathStats:
    """Counters of a :class:`RequestPathCache` (``queued``: keys waiting to be written now)."""

    late_reads: int
    failed_reads: int
    queued: int
    written: int
    dropped: int
    failed_writes: int


class RequestPathCache:
    """*cache* with a read budget and a bounded write queue; see the module docstring.

    ``read_budget``: seconds a read waits for L2 (``None``: no limit); ``max_queued``: keys
    that may wait to be written (0: write before returning); ``close_timeout``: seconds
    ``close`` gives the writer to send what waits; ``name`` of this tier in :meth:`stats`.
    The wrapped cache is not closed by :meth:`close`: its owner closes it.
    """

    def __init__(
        self,
        cache: Cache,
        *,
        read_budget: float | None = 0.03,
        max_queued: int = 1024,
        close_timeout: float = 2.0,
        name: str = "request_path",
    ) -> None:
        if read_budget is not None and not read_budget > 0:
            raise ValueError(f"read_budget must be > 0 or None, got {read_budget}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        if close_timeout < 0:
            raise ValueError(f"close_timeout must be >= 0, got {close_timeout}")
        self.cache = cache
        self.read_budget = read_budget
        self.max_queued = max_queued
        self.close_timeout = close_timeout
        self.name = name
        self.events = EventLog(logger, f"cache {name}")
        self._tiered = cache if isinstance(cache, TieredCache) else None
        self._reads: set[asyncio.Task[dict[str, Any]]] = set()
        self._batches: list[tuple[dict[str, Any], float | None]] = []
        self._pending: dict[str, Any] = {}  # key -> value queued or being written
        self._queued = 0
        self._writer: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None  # set while nothing waits
        self._closed = False
        self._late_reads = self._failed_reads = 0
        # Reads are numbered as they start; a read's outcome sets the state only if it
        # started after every read whose outcome is known (a straggler does not flip it).
        self._read_number = self._state_moved_by = 0
        self._written = self._dropped = self._failed_writes = 0

    # -- reads -------------------------------------------------------------------------

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The found keys of *keys* with their values: L1, the write queue, then L2 within
        ``read_budget`` (what L2 did not answer in time is left out, like a miss)."""
        wanted = list(keys)
        tiered = self._tiered
        found = await tiered.l1.get_many(wanted) if tiered is not None else {}
        pending = self._pending
        rest = []
        for key in wanted:
            if key in found:
                continue
            value = pending.get(key, pending)
            if value is not pending:
                found[key] = value
            else:
                rest.append(key)
        if not rest:
            self._report(len(found), 0)
            return found
        found_here = len(found)  # L1 and the write queue: both in this process
        below = tiered.get_many_below_l1(rest) if tiered is not None else self.cache.get_many(rest)
        self._read_number += 1
        number = self._read_number
        if self.read_budget is None:
            try:
                found.update(await below)
            except CacheError as exc:
                self._read_failed(exc, number)
            else:
                self._answered(number)
            self._report(found_here, len(found) - found_here)
            return found
        task = asyncio.get_running_loop().create_task(below)
        self._reads.add(task)
        task.add_done_callback(functools.partial(self._read_done, number))
        done, _ = await asyncio.wait((task,), timeout=self.read_budget)
        if not done:
            self._late_reads += 1
            budget_ms = self.read_budget * 1000
            self.events.failure("read over budget", f"no answer within {budget_ms:.0f} ms")
        elif not task.cancelled() and task.exception() is None:
            found.update(task.result())
        self._report(found_here, len(found) - found_here)
        return found

    def _report(self, here: int, below: int) -> None:
        """Tell tracing what this read found per tier (after the tiers did: this stands). A
        one-tier cache has reported for itself already."""
        if self._tiered is not None:
            _trace_hooks.cache_read(here, below)

    def _read_done(self, number: int, task: asyncio.Task[dict[str, Any]]) -> None:
        """Account for L2 read *number*, answered in time or not (its L1 fill is done)."""
        self._reads.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._answered(number)
        else:
            self._read_failed(exc, number)

    def _answered(self, number: int) -> None:
        if number > self._state_moved_by:
            self._state_moved_by = number
            self.events.state("ok", "an L2 read answered", level=logging.INFO)

    def _read_failed(self, exc: BaseException, number: int) -> None:
        self._failed_reads += 1
        if number > self._state_moved_by:
            self._state_moved_by = number
            self.events.state("degraded", "reads fail: requests compute what L1 lacks")
        self.events.failure("read", exc)

    # -- writes ------------------------------------------------------------------------

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Queue *mapping* for the cache (``ttl`` as in ``Cache.set_many``); returns at once,
        unless ``max_queued`` is 0. A full queue drops the values (counted)."""
        if not mapping:
            return
        if self.max_queued == 0:
            try:
                await self.cache.set_many(mapping, ttl)
            except CacheError as exc:
                self._write_failed(exc, len(mapping))
            else:
                self._written += len(mapping)
            return
        if self._closed or self._queued + len(mapping) > self.max_queued:
            self._dropped += len(mapping)
            waiting = "closed" if self._closed else f"{self._queued} keys waiting"
            self.events.failure("write queue full", f"{len(mapping)} values dropped ({waiting})")
            return
        batch = dict(mapping)
        self._batches.append((batch, ttl))
        self._pending.update(batch)
        self._queued += len(batch)
        if self._wake is None or self._drained is None:
            self._wake, self._drained = asyncio.Event(), asyncio.Event()
        self._drained.clear()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(self._wake), name=f"{self.name} cache writer"
            )
        self._wake.set()

    async def _write_loop(self, wake: asyncio.Event) -> None:
        """Send what waits, merged per TTL, until closed and empty."""
        while True:
            if not self._batches:
                if self._closed:
                    return
                await wake.wait()
                wake.clear()
                continue
            batches, self._batches = self._batches, []
            merged: dict[float | None, dict[str, Any]] = {}
            for mapping, ttl in batches:
                merged.setdefault(ttl, {}).update(mapping)
            try:
                for ttl, values in merged.items():
                    await self._write(values, ttl)
            finally:
                self._queued -= sum(len(mapping) for mapping, _ in batches)
                if not self._queued and self._drained is not None:
                    self._drained.set()

    async def _write(self, values: dict[str, Any], ttl: float | None) -> None:
        try:
            await self.cache.set_many(values, ttl)
        except Exception as exc:  # the writer must outlive any failure
            self._write_failed(exc, len(values))
        else:
            self._written += len(values)
        finally:
            pending = self._pending
            for key, value in values.items():
                if pending.get(key) is value:  # not replaced by a later write meanwhile
                    del pending[key]

    def _write_failed(self, exc: BaseException, count: int) -> None:
        self._failed_writes += count
        self.events.failure("write", exc)

    async def flush(self) -> None:
        """Wait until every value queued so far has been sent (or failed)."""
        if self._queued and self._drained is not None:
            await self._drained.wait()

    # -- lifecycle and introspection ---------------------------------------------------

    async def close(self) -> None:
        """Stop the late reads; give the writer ``close_timeout`` seconds to send what
        waits (the rest is dropped and counted). The wrapped cache stays open."""
        self._closed = True
        reads = list(self._reads)
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        writer = self._writer
        if writer is None:
            return
        if self._wake is not None:
            self._wake.set()
        done, _ = await asyncio.wait((writer,), timeout=self.close_timeout)
        if not done:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            left = sum(len(mapping) for mapping, _ in self._batches)
            self._dropped += left
            self._batches.clear()
            self._pending.clear()
            if left:
                self.events.failure("write queue full", f"{left} values dropped on close")

    def request_stats(self) -> RequestPathStats:
        """A snapshot of this wrapper's own counters."""
        return RequestPathStats(
            late_reads=self._late_reads,
            failed_reads=self._failed_reads,
            queued=self._queued,
            written=self._written,
            dropped=self._dropped,
            failed_writes=self._failed_writes,
        )

    def stats(self) -> CacheStats:
        """The wrapped cache's tiers, then this one (``errors``: failed reads and writes;
        ``events``: its EventLog's counts)."""
        own = TierStats(
            name=self.name,
            errors=self._failed_reads + self._failed_writes,
            sets=self._written,
            events=self.events.counts(),
        )
        return CacheStats(tiers=(*self.cache.stats().tiers, own))

    def __repr__(self) -> str:
        s = self.request_stats()
        return (
            f"<RequestPathCache name={self.name!r} read_budget={self.read_budget} "
            f"queued={s.queued}/{self.max_queued} late_reads={s.late_reads} "
            f"dropped={s.dropped} state={self.events.current!r}>"
        )
