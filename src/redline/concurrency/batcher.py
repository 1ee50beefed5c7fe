"""MicroBatcher: turn many concurrent single-item calls into few batched calls.

A batch starts as soon as the worker is free. The worker waits up to ``max_wait`` to fill a
batch only while more work is visibly arriving, so a lone request on an idle batcher runs
at once; under load, arrivals pile up while a batch runs and form the next batch.

The batch function cannot kill the batcher: whatever it raises or however it ends fails that
batch's callers and nothing else, and the worker goes on with the next batch. Only the
batcher's own shutdown (``close``, or a cancel of the worker task) stops the worker; if it
stops any other way, every waiting caller fails with ``WorkerCrashed`` and ``submit`` fails
fast until ``start()`` is called again.

Example::

    async def embed(texts: list[str]) -> list[list[float]]:
        return model.encode(texts).tolist()

    async with MicroBatcher(embed, max_batch_size=64) as batcher:
        vector = await batcher.submit("hello world", timeout=5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from redline.concurrency._batch_queue import BatchQueue, Entry
from redline.concurrency._private import is_async_callable, require_positive_int
from redline.exceptions import (
    BatchFailed,
    BatchResultError,
    BatchTimeout,
    Closed,
    NotStarted,
    Overloaded,
    WorkerCrashed,
)

__all__ = ["BatchRecord", "BatcherHealth", "BatcherStats", "MicroBatcher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Awaitable[Sequence[R]]] | Callable[[list[T]], Sequence[R]]


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """What happened in one batch; passed to ``on_batch`` after it ran."""

    size: int
    cost: int
    queue_waits: tuple[float, ...]
    run_seconds: float
    error: str | None = None
    items: tuple[Any, ...] = ()  # the batch's items, in order (what was queued, not joiners)


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """A snapshot of a :class:`MicroBatcher`'s counters."""

    queue_depth: int = 0
    batches: int = 0
    items: int = 0
    batch_size_histogram: dict[int, int] = field(default_factory=dict)
    queue_wait_seconds_total: float = 0.0
    run_seconds_total: float = 0.0
    dedup_hits: int = 0
    rejected: int = 0
    errors: int = 0
    worker_restarts: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


@dataclass(frozen=True, slots=True)
class BatcherHealth:
    """Whether the worker is alive, and what killed it last if it ever died."""

    alive: bool
    restarts: int
    last_error: str | None
    queue_depth: int
    max_queue: int


@dataclass(slots=True, eq=False)
class _Dispatched:
    """A batch handed to ``batch_fn``; ``future`` gives (results, started, finished)."""

    batch: list[Entry]
    future: asyncio.Future[Any]
    at: float


class MicroBatcher(Generic[T, R]):
    """Collect concurrent ``submit(item)`` calls into ``batch_fn(items)`` calls.

    ``batch_fn`` takes a list and returns one result per item; it may be async, or sync (then
    it runs in the batcher's own model thread so the event loop never blocks, and while a full
    batch's worth of items waits, the next batch is handed to that thread before the running
    one ends, so the model does not idle between batches; that batch is what is queued then,
    smaller than ``max_batch_size`` when a ``group_fn`` or cost cap splits it, and an item of
    it counts as started).
    ``cost_fn``/``max_batch_cost`` cap a batch's total cost (an item costlier than the cap
    runs alone); ``group_fn`` keeps items of different buckets (say, length buckets) out of
    the same batch. With ``dedup=True`` or a ``dedup_key``, identical items in flight at once
    are computed once, and ``on_duplicate(item_in_flight, duplicate)`` is called (on the event
    loop) for each duplicate that joins, whether the first one's batch has started or not.
    ``batch_timeout`` bounds one ``batch_fn`` call: past it, the call's callers get
    :class:`~redline.exceptions.BatchTimeout` and the worker moves on (an async call is
    cancelled; a sync one cannot be: the model thread finishes it first, and batches behind
    it count that wait against their own ``batch_timeout``).

    What callers see: the batch function's own ``Exception`` as raised (or, with
    ``retry_individually``, the error of their item run alone); ``BatchFailed`` (cause
    chained) when it ends with a ``BaseException`` that is not an ``Exception``, such as a
    ``CancelledError`` of its own; ``BatchResultError`` for a wrong number of results;
    ``BatchTimeout`` past their own ``timeout`` or the ``batch_timeout``; ``Overloaded``,
    ``Closed``, ``NotStarted`` and ``WorkerCrashed`` from the batcher itself. A caller that is
    cancelled or times out is removed: its item never runs if its batch had not started, and
    its result is dropped if it had. Misuse (bad options, a non-positive ``timeout``, a bad
    ``cost_fn`` value) raises ``ValueError``/``TypeError`` with an exact message.

    ``KeyboardInterrupt`` and ``SystemExit`` from ``batch_fn`` fail its batch like any other
    ``BaseException`` and the batcher carries on. From an async ``batch_fn`` asyncio itself
    also re-raises them out of the event loop (the batch runs in its own task, so the program
    stops as asked, not just the worker); from a sync one they happen in the model thread,
    where, as in any thread, they stop nothing else.

    Example::

        batcher = MicroBatcher(model_encode, max_batch_size=32, max_wait=0.002)
        await batcher.start()
        result = await batcher.submit("text")
        await batcher.close()
    """

    def __init__(
        self,
        batch_fn: BatchFn[T, R],
        *,
        max_batch_size: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 1024,
        cost_fn: Callable[[T], int] | None = None,
        max_batch_cost: int | None = None,
        group_fn: Callable[[T], Hashable] | None = None,
        dedup_key: Callable[[T], Hashable] | None = None,
        dedup: bool = False,
        retry_individually: bool = False,
        batch_timeout: float | None = None,
        timer: Callable[[], float] = time.monotonic,
        name: str = "batcher",
        on_batch: Callable[[BatchRecord], None] | None = None,
        on_duplicate: Callable[[T, T], None] | None = None,
    ) -> None:
        if not callable(batch_fn):
            raise TypeError(f"batch_fn must be callable, got {type(batch_fn).__name__}")
        self._max_batch_size = require_positive_int("max_batch_size", max_batch_size)
        self._max_queue = require_positive_int("max_queue", max_queue)
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        if max_batch_cost is not None:
            require_positive_int("max_batch_cost", max_batch_cost)
            if cost_fn is None:
                raise ValueError("max_batch_cost needs a cost_fn")
        if batch_timeout is not None and not batch_timeout > 0:
            raise ValueError(f"batch_timeout must be > 0, got {batch_timeout}")
        self._batch_fn = batch_fn
        self._is_async = is_async_callable(batch_fn)
        self._max_wait = float(max_wait)
        self._cost_fn = cost_fn
        self._max_batch_cost = max_batch_cost
        self._group_fn = group_fn
        self._dedup_key = dedup_key
        self._dedup = dedup or dedup_key is not None
        self._retry_individually = retry_individually
        self._batch_timeout = batch_timeout
        self._timer = timer
        self.name = name
        self._on_batch = on_batch
        self._on_duplicate = on_duplicate

        self._queue = BatchQueue(self._max_batch_size, max_batch_cost)
        self._arrived = asyncio.Event()
        self._consecutive_crashes = 0
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None  # the model thread (sync batch_fn)
        self._inflight: list[_Dispatched] = []  # handed to batch_fn, outcome not yet handed out
        self._abandoned: set[asyncio.Future[Any]] = set()  # cancelled batch tasks still ending
        self._closing = False
        self._closed = False
        self._last_error: str | None = None
        # counters
        self._batches = 0
        self._items = 0
        self._histogram: dict[int, int] = {}
        self._queue_wait_total = 0.0
        self._run_total = 0.0
        self._dedup_hits = 0
        self._rejected = 0
        self._errors = 0
        self._restarts = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker task (idempotent); starts a fresh one if the worker has stopped."""
        if self._closing:
            raise Closed(f"MicroBatcher {self.name!r} is closed")
        if self._worker is not None and not self._worker.done():
            return
        if self._worker is not None:
            self._restarts += 1
        if not self._is_async and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batcher-{self.name}")
        self._worker = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"redline-batcher-{self.name}"
        )
        self._worker.add_done_callback(self._worker_stopped)

    async def close(self, drain: bool = True) -> None:
        """Stop taking work; with ``drain`` finish what is queued, else fail it with ``Closed``."""
        self._closing = True
        worker = self._worker
        if worker is None:
            self._closed = True
            return
        if not drain:
            self._fail_queued(Closed(f"MicroBatcher {self.name!r} closed before running the item"))
        self._arrived.set()
        if not drain and self._inflight:
            worker.cancel()
        await asyncio.wait({worker})
        self._fail_queued(Closed(f"MicroBatcher {self.name!r} closed before running the item"))
        if self._abandoned:
            # Cancelled batch tasks end within a step or two; nothing is left running after us.
            await asyncio.wait(set(self._abandoned))
        if self._executor is not None:
            # Nothing is queued any more; a batch cancelled mid-run finishes in the background.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._closed = True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(drain=exc_type is None)

    # -- submitting ----------------------------------------------------------------------

    def _check_admission(self, timeout: float | None) -> None:
        """What ``submit`` and ``submit_many`` refuse before queueing anything."""
        if self._closing:
            self._rejected += 1
            raise Closed(f"MicroBatcher {self.name!r} is closed")
        worker = self._worker
        if worker is None:
            raise NotStarted(
                f"MicroBatcher {self.name!r} is not started; await start() or use `async with`"
            )
        if worker.done():
            self._rejected += 1
            raise WorkerCrashed(
                f"MicroBatcher {self.name!r} worker is not running ({self._last_error}); "
                "await start() to run a new one"
            )
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")

    async def submit(self, item: T, *, timeout: float | None = None) -> R:
        """Queue *item* and return its result; ``BatchTimeout`` past *timeout* seconds.

        Raises ``Overloaded`` when the queue is full, ``Closed`` once closing, ``NotStarted``
        before ``start()`` and ``WorkerCrashed`` at once if the worker has stopped. A caller
        cancelled (or timed out) before its batch starts never reaches ``batch_fn``.
        """
        self._check_admission(timeout)
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = self._enqueue(item, waiter)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await waiter
        except BaseException as exc:
            self._detach(entry, waiter)
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise BatchTimeout(
                    f"MicroBatcher {self.name!r}: no result within {timeout:g}s"
                ) from None
            raise

    async def submit_many(self, items: Sequence[T], *, timeout: float | None = None) -> list[R]:
        """The results of *items*, as ``submit`` of each run concurrently would give them,
        without a task per item: every item is queued at once and one *timeout* covers them.

        All or nothing: the first failure (or a cancel, or the deadline) takes every other
        item of the call out of the queue and raises, as ``submit`` would have.
        """
        self._check_admission(timeout)
        loop = asyncio.get_running_loop()
        queued: list[tuple[Entry, asyncio.Future[R]]] = []
        deadline = asyncio.timeout(timeout)
        try:
            for item in items:
                waiter: asyncio.Future[R] = loop.create_future()
                queued.append((self._enqueue(item, waiter), waiter))
            async with deadline:
                return list(await asyncio.gather(*(waiter for _, waiter in queued)))
        except BaseException as exc:
            for entry, waiter in queued:
                self._detach(entry, waiter)
                waiter.cancel()  # a no-op for the settled ones
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise BatchTimeout(
                    f"MicroBatcher {self.name!r}: no result within {timeout:g}s"
                ) from None
            raise

    def _enqueue(self, item: T, waiter: asyncio.Future[Any]) -> Entry:
        key = self._key_of(item) if self._dedup else None
        if key is not None:
            existing = self._queue.live_duplicate(key)
            if existing is not None:
                if self._on_duplicate is not None:
                    self._on_duplicate(existing.item, item)
                existing.waiters.append(waiter)
                self._dedup_hits += 1
                return existing
        if self._queue.depth >= self._max_queue:
            self._rejected += 1
            raise Overloaded(
                f"MicroBatcher {self.name!r} queue is full ({self._max_queue} items); retry later"
            )
        cost = self._cost_of(item)
        group = self._group_fn(item) if self._group_fn is not None else None
        entry = self._queue.push(item, key, group, cost, self._timer())
        entry.waiters.append(waiter)
        self._arrived.set()
        return entry

    def _key_of(self, item: T) -> Hashable | None:
        if self._dedup_key is not None:
            return self._dedup_key(item)
        try:
            hash(item)
        except TypeError:
            return None  # unhashable items are simply not deduplicated
        return cast(Hashable, item)

    def _cost_of(self, item: T) -> int:
        if self._cost_fn is None:
            return 1
        cost = self._cost_fn(item)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ValueError(f"cost_fn must return an int >= 0, got {cost!r}")
        return cost

    def _detach(self, entry: Entry, waiter: asyncio.Future[Any]) -> None:
        """Forget a caller that gave up; drop its item if nobody else waits and it has not run."""
        with contextlib.suppress(ValueError):
            entry.waiters.remove(waiter)
        if not entry.waiters:
            self._queue.discard(entry)

    def _fail_queued(self, exc: BaseException) -> None:
        for entry in self._queue.clear():
            self._settle(entry, exc)

    # -- the worker ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Run the worker loop; restart it when it dies of an unexpected error."""
        while True:
            try:
                await self._loop()
                return
            except asyncio.CancelledError:
                # The worker task itself was cancelled: close(drain=False), or someone else.
                # (batch_fn's own CancelledError never gets here: see _outcome.)
                if self._closing:
                    self._abandon_inflight(Closed(f"MicroBatcher {self.name!r} closed mid-batch"))
                else:
                    self._abandon_inflight(
                        WorkerCrashed(f"MicroBatcher {self.name!r} worker was cancelled")
                    )
                raise
            except Exception as exc:
                self._restarts += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("MicroBatcher %r worker died; restarting", self.name)
                self._abandon_inflight(
                    WorkerCrashed(f"MicroBatcher {self.name!r} worker died: {exc}")
                )
                # Back off a little if the loop keeps dying, so a persistent bug cannot spin.
                self._consecutive_crashes += 1
                await asyncio.sleep(min(0.01 * (self._consecutive_crashes - 1), 1.0))
            except BaseException as exc:
                # KeyboardInterrupt / SystemExit in the worker's own code: the program is
                # stopping. Fail what is in flight; _worker_stopped fails the queue.
                self._abandon_inflight(
                    WorkerCrashed(f"MicroBatcher {self.name!r} worker stopped: {exc!r}")
                )
                raise

    def _worker_stopped(self, worker: asyncio.Task[None]) -> None:
        """Done callback of the worker task: outside close(), fail every queued caller now."""
        if worker.cancelled():
            reason = "CancelledError: the worker task was cancelled"
        else:
            exc = worker.exception()
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "the worker returned"
        if self._closing:
            return
        self._last_error = reason
        logger.error("MicroBatcher %r worker stopped outside close(): %s", self.name, reason)
        self._fail_queued(WorkerCrashed(f"MicroBatcher {self.name!r} worker stopped: {reason}"))

    async def _loop(self) -> None:
        ahead: _Dispatched | None = None
        while True:
            if ahead is None:
                batch = await self._next_batch()
                if batch is None:
                    return
                ahead = self._dispatch(batch)
            current, ahead = ahead, None
            # Pipelining (sync batch_fn): when at least a full batch's worth of items is
            # queued, hand the next batch to the model thread now, so it starts the instant
            # this one ends instead of after a round trip through the event loop. The early
            # batch is what _take gives now: with a group_fn or a cost cap it can be smaller
            # than max_batch_size, and items arriving while this batch runs cannot join it.
            if self._executor is not None and self._queue.depth >= self._max_batch_size:
                ahead = self._dispatch(self._take())
            await self._complete(current)
            self._consecutive_crashes = 0

    async def _next_batch(self) -> list[Entry] | None:
        arrived = self._arrived
        while True:
            while self._queue.depth == 0:
                if self._closing:
                    return None
                arrived.clear()
                await arrived.wait()
            # Let submitters that are already scheduled enqueue before deciding.
            before = self._queue.depth
            await asyncio.sleep(0)
            if self._max_wait > 0 and not self._closing and before < self._queue.depth:
                await self._fill(arrived)
            batch = self._take()
            if batch:  # empty when every queued caller gave up meanwhile
                return batch

    async def _fill(self, arrived: asyncio.Event) -> None:
        """More work is arriving: wait up to ``max_wait`` after the oldest item for a full batch."""
        found, oldest = self._queue.oldest_group()
        if not found:
            return
        deadline = self._queue.head_enqueued_at(oldest) + self._max_wait
        while not self._closing and self._queue.group_size(oldest) < self._max_batch_size:
            remaining = deadline - self._timer()
            if remaining <= 0:
                return
            arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await arrived.wait()
            except TimeoutError:
                return

    def _take(self) -> list[Entry]:
        return self._queue.take()

    def _dispatch(self, batch: list[Entry]) -> _Dispatched:
        """Start ``batch_fn`` on *batch*: in the model thread (sync) or as a task (async)."""
        items = [entry.item for entry in batch]
        future: asyncio.Future[tuple[Sequence[R], float, float]]
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, self._timed_sync, items)
        else:
            # Its own task: whatever batch_fn raises, CancelledError included, ends that task
            # and is read back from it in _outcome, never raised into the worker.
            future = asyncio.ensure_future(self._timed_async(items))
        dispatched = _Dispatched(batch, future, self._timer())
        self._inflight.append(dispatched)
        return dispatched

    def _abandon_inflight(self, exc: BaseException) -> None:
        """The worker is stopping mid-batch: fail every dispatched batch, stop what can stop."""
        inflight, self._inflight = self._inflight, []
        for dispatched in inflight:
            for entry in dispatched.batch:
                self._settle(entry, exc)
            self._abandon(dispatched.future)

    def _abandon(self, future: asyncio.Future[Any]) -> None:
        """Cancel a batch call nobody will read; its outcome is retrieved, so never logged."""
        future.add_done_callback(_retrieve)
        if future.cancel() and isinstance(future, asyncio.Task):
            self._abandoned.add(future)
            future.add_done_callback(self._abandoned.discard)

    def _timed_sync(self, items: list[T]) -> tuple[Sequence[R], float, float]:
        """Runs in the model thread; the times say when the model really ran."""
        started = self._timer()
        try:
            results = cast(Callable[[list[T]], Sequence[R]], self._batch_fn)(items)
        except StopIteration as exc:
            # An asyncio future cannot hold a StopIteration: it would never complete.
            raise RuntimeError(f"batch_fn raised StopIteration: {exc!r}") from exc
        return results, started, self._timer()

    async def _timed_async(self, items: list[T]) -> tuple[Sequence[R], float, float]:
        started = self._timer()
        results = await cast(Callable[[list[T]], Awaitable[Sequence[R]]], self._batch_fn)(items)
        return results, started, self._timer()

    async def _outcome(self, dispatched: _Dispatched) -> tuple[Sequence[R], float, float]:
        """Wait for a dispatched call; its results, or a RedlineError / batch_fn's Exception."""
        future = dispatched.future
        if not future.done():
            # asyncio.wait never raises the call's outcome into the worker, so a
            # CancelledError here is always the worker's own shutdown.
            await asyncio.wait({future}, timeout=self._batch_timeout)
        if not future.done():
            self._abandon(future)
            raise BatchTimeout(
                f"MicroBatcher {self.name!r}: batch_fn ran past batch_timeout="
                f"{self._batch_timeout:g}s"
            )
        try:
            results, started, finished = future.result()
        except Exception:
            raise
        except BaseException as exc:
            raise BatchFailed(
                f"MicroBatcher {self.name!r}: batch_fn ended with {exc!r}; "
                "its batch failed, the batcher carries on"
            ) from exc
        try:
            count = len(results)
        except TypeError:
            raise BatchResultError(
                f"batch_fn must return a sequence, got {type(results).__name__}"
            ) from None
        if count != len(dispatched.batch):
            raise BatchResultError(
                f"batch_fn returned {count} results for {len(dispatched.batch)} items"
            )
        return results, started, finished

    async def _complete(self, dispatched: _Dispatched) -> None:
        """Wait for a dispatched batch, hand out results or errors, record the batch."""
        batch = dispatched.batch
        started, finished = dispatched.at, -1.0
        error: str | None = None
        try:
            results, started, finished = await self._outcome(dispatched)
        except Exception as exc:
            self._errors += 1
            error = f"{type(exc).__name__}: {exc}"
            finished = self._timer()
            if (
                self._retry_individually
                and len(batch) > 1
                and not isinstance(exc, BatchTimeout)  # N calls that may each hang: no
            ):
                for entry in batch:
                    await self._run_alone(entry)
            else:
                for entry in batch:
                    self._settle(entry, exc)
        else:
            for entry, result in zip(batch, results, strict=True):
                self._settle(entry, result=result)
        self._inflight.remove(dispatched)  # only now: a shutdown mid-retry still fails them all
        waits = tuple(max(0.0, started - entry.enqueued_at) for entry in batch)
        run_seconds = max(0.0, finished - started)
        self._batches += 1
        self._items += len(batch)
        self._histogram[len(batch)] = self._histogram.get(len(batch), 0) + 1
        self._queue_wait_total += sum(waits)
        self._run_total += run_seconds
        if self._on_batch is not None:
            items = tuple([entry.item for entry in batch])
            cost = sum(e.cost for e in batch)
            record = BatchRecord(len(batch), cost, waits, run_seconds, error, items)
            try:
                self._on_batch(record)
            except Exception:
                logger.exception("MicroBatcher %r on_batch callback failed", self.name)

    async def _run_alone(self, entry: Entry) -> None:
        if not entry.waiters:
            self._settle(entry)  # every caller gave up meanwhile: nothing to run it for
            return
        dispatched = self._dispatch([entry])
        try:
            (result,), _, _ = await self._outcome(dispatched)
        except Exception as exc:
            self._errors += 1
            self._settle(entry, exc)
        else:
            self._settle(entry, result=result)
        self._inflight.remove(dispatched)

    def _settle(
        self, entry: Entry, exc: BaseException | None = None, *, result: Any = None
    ) -> None:
        self._queue.forget(entry)
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(result)

    # -- introspection -------------------------------------------------------------------

    def stats(self) -> BatcherStats:
        """A frozen snapshot of the counters."""
        return BatcherStats(
            queue_depth=self._queue.depth,
            batches=self._batches,
            items=self._items,
            batch_size_histogram=dict(self._histogram),
            queue_wait_seconds_total=self._queue_wait_total,
            run_seconds_total=self._run_total,
            dedup_hits=self._dedup_hits,
            rejected=self._rejected,
            errors=self._errors,
            worker_restarts=self._restarts,
        )

    def health(self) -> BatcherHealth:
        """Liveness of the worker task, with the last error that killed it."""
        alive = self._worker is not None and not self._worker.done()
        return BatcherHealth(
            alive, self._restarts, self._last_error, self._queue.depth, self._max_queue
        )

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "closing"
            if self._closing
            else ("running" if self._worker is not None else "new")
        )
        return (
            f"<MicroBatcher {self.name!r} {state} queue={self._queue.depth}/{self._max_queue} "
            f"batches={self._batches} items={self._items} max_batch_size={self._max_batch_size} "
            f"max_wait={self._max_wait}>"
        )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned call's outcome as read, so asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()
