"""Coalescing and batching of upstream work for one (model, dimensions) pair.

Every distinct input in flight has one shared future: a request asking for an input that is
already on its way waits for that call instead of sending it again, and the future stays
visible for ``grace`` seconds after its vectors were stored, so a request whose cache read
raced the store still finds it. New inputs go through a :class:`MicroBatcher` whose batches
respect the upstream's limits (inputs and estimated tokens per call); at most
``concurrency`` upstream calls run at once, and while they all run, new inputs queue and
leave together as the next batch. A long client list is split into batches the same way
and each input finds its own vector again, so order never depends on how it was split.

Example::

    dispatcher = Dispatcher(route, None, store=store, max_inputs=32, max_tokens=16384)
    await dispatcher.start()
    rows = await dispatcher.embed(["a", "b"], deadline=time.monotonic() + 30)
    rows["a"].tokens
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from redline.concurrency.batcher import MicroBatcher
from redline.exceptions import (
    BatchTimeout,
    ConcurrencyError,
    GatewayError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from redline.gateway.observer import NO_OBSERVER, GatewayObserver
from redline.gateway.router import ModelRoute
from redline.gateway.tokens import estimate_tokens, split_tokens
from redline.serve import tracing
from redline.serve.token_input import id_count, is_ids

__all__ = ["Dispatcher", "Row"]


@dataclass(frozen=True, slots=True)
class Row:
    """One input's vector and its share of the upstream's ``prompt_tokens``."""

    vector: npt.NDArray[np.float32]
    tokens: int


Store = Callable[[dict[str, Row]], Awaitable[None]]


class Dispatcher:
    """Sends the inputs of many requests to a :class:`ModelRoute`, coalesced and batched."""

    def __init__(
        self,
        route: ModelRoute,
        dimensions: int | None,
        *,
        store: Store,
        max_inputs: int,
        max_tokens: int,
        concurrency: int = 8,
        call_timeout: float = 30.0,
        max_wait: float = 0.002,
        max_queue: int = 16384,
        grace: float = 2.0,
        count: Callable[[str], int] = estimate_tokens,
        timer: Callable[[], float] = time.monotonic,
        observer: GatewayObserver = NO_OBSERVER,
    ) -> None:
        self.route = route
        self.dimensions = dimensions
        self._store = store
        self._call_timeout = call_timeout
        self._grace = grace
        self._timer = timer
        self._count = _with_ids(count)
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[Row]] = {}
        self._keep: set[str] = set()  # inputs in flight that some request lets us store
        self._finished: dict[str, float] = {}  # when the rows in their grace period arrived
        self._tasks: set[asyncio.Task[None]] = set()  # submissions and upstream calls
        # With tracing on: the context (and span) of the request that queued each input, the
        # spans of the requests that joined it before its call started, and the requests its
        # call serves once it started (requests joining then are added there).
        self._origins: dict[str, tuple[contextvars.Context, object]] = {}
        self._joined: dict[str, list[object]] = {}
        self._calls: dict[str, tracing.Served] = {}
        self._observer = observer
        self._model = route.model
        self.upstream_calls = 0
        self.upstream_inputs = 0
        self._batcher: MicroBatcher[str, None] = MicroBatcher(
            self._launch,
            max_batch_size=max_inputs,
            max_wait=max_wait,
            max_queue=max_queue,
            cost_fn=self._count,
            group_fn=is_ids,  # token-id and text inputs never share a call
            max_batch_cost=max_tokens,
            name=f"upstream:{route.model}:{dimensions}",
        )

    async def start(self) -> None:
        """Start the batch worker."""
        await self._batcher.start()

    async def close(self) -> None:
        """Stop taking work, cancel running calls, fail whoever still waits."""
        await self._batcher.close(drain=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        for future in self._inflight.values():
            if not future.done():
                future.set_exception(UpstreamUnavailable("the gateway is shutting down"))
                future.exception()
        self._inflight.clear()
        self._finished.clear()
        self._calls.clear()

    async def embed(
        self,
        texts: list[str],
        *,
        deadline: float,
        store: bool = True,
        max_age: float | None = None,
    ) -> dict[str, Row]:
        """The rows of the distinct *texts*; :class:`GatewayError` on failure or past *deadline*.

        Fresh rows are stored when at least one request waiting for them allows it (*store*).
        Rows that finished (and wait out their grace period) are reused only when younger
        than *max_age* seconds (0: never); a call still on its way is always joined.
        """
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Row]] = {}
        new: list[str] = []
        for text in texts:
            future = self._inflight.get(text)
            if future is None or (future.done() and not self._reusable(text, future, max_age)):
                future = loop.create_future()
                self._inflight[text] = future
                new.append(text)
            futures[text] = future
            if store and not future.done():
                self._keep.add(text)
        self._observer.inputs(self._model, cached=0, coalesced=len(texts) - len(new), sent=len(new))
        if tracing.is_enabled():
            self._trace_origins(texts, new, futures)
        if new:
            # Its own task: a caller cancelled now must not take inputs out of the queue that
            # other requests may already be waiting for (they would wait for nothing).
            submitting = asyncio.create_task(self._submit(new, deadline))
            self._tasks.add(submitting)
            submitting.add_done_callback(self._tasks.discard)
        remaining = deadline - self._timer()
        waiting = [future for future in futures.values() if not future.done()]
        if waiting:
            if remaining <= 0:
                raise self._late()
            if not await _all_done(waiting, remaining):
                raise self._late()
        return {text: future.result() for text, future in futures.items()}

    def _trace_origins(
        self, texts: list[str], new: list[str], futures: dict[str, asyncio.Future[Row]]
    ) -> None:
        """Keep the request's context for its *new* inputs: the upstream call that sends them
        runs in it, so its client span (and the traceparent it sends) belong to this request's
        trace, or links to this request when it runs in another's; a request whose inputs
        joined queued ones is linked from their call as joined, and one whose inputs joined a
        call on its way is linked with that call both ways (``tracing.join_call``)."""
        link = tracing.request_link()
        if new:
            origin = (contextvars.copy_context(), link)
            for text in new:
                self._origins.setdefault(text, origin)
        if link is None or len(new) == len(texts):
            return
        fresh = set(new)
        for text in texts:
            if text in fresh:
                continue
            if text in self._origins:  # queued, its call not started
                self._joined.setdefault(text, []).append(link)
                continue
            served = self._calls.get(text)
            if served is not None and not futures[text].done():  # its call is on its way
                tracing.join_call(served)

    def _served(
        self, texts: list[str]
    ) -> tuple[contextvars.Context | None, list[tuple[object, bool]]]:
        """The context the call of *texts* runs in (the first request's), and the other
        requests it serves as ``(span, joined)`` pairs for ``tracing.serving``."""
        origins = [self._origins.pop(text, None) for text in texts]
        joiners = [link for text in texts for link in self._joined.pop(text, ())]
        found = [origin for origin in origins if origin is not None]
        if not found:
            return None, []
        context, parent = found[0]
        seen = {id(parent)}  # a request's inputs all carry its one span (spans do not hash)
        served: list[tuple[object, bool]] = []
        for links, joined in (([link for _, link in found], False), (joiners, True)):
            for link in links:
                if link is not None and id(link) not in seen:
                    seen.add(id(link))
                    served.append((link, joined))
        return context, served

    def _reusable(self, text: str, future: asyncio.Future[Row], max_age: float | None) -> bool:
        """Whether a finished future may answer a request that accepts rows *max_age* old."""
        if future.exception() is not None:
            return False
        if max_age is None:
            return True
        return self._timer() - self._finished.get(text, float("-inf")) < max_age

    def _late(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"no upstream answered for model {self.route.model!r} within the deadline "
            f"[{self.route.states()}]"
        )

    async def _submit(self, fresh: list[str], deadline: float) -> None:
        """Queue the new inputs; the ones that cannot be queued fail their futures now."""
        remaining = max(0.001, deadline - self._timer())
        if len(fresh) == 1:  # the usual case (single-input clients): no gather, no task
            try:
                await self._batcher.submit(fresh[0], timeout=remaining)
            except Exception as exc:
                self._not_queued(fresh[0], exc)
            return
        results = await asyncio.gather(
            *(self._batcher.submit(text, timeout=remaining) for text in fresh),
            return_exceptions=True,
        )
        for text, result in zip(fresh, results, strict=True):
            if isinstance(result, BaseException):
                self._not_queued(text, result)

    def _not_queued(self, text: str, exc: BaseException) -> None:
        """Fail the future of *text*, which the batcher refused or timed out."""
        error: GatewayError
        if isinstance(exc, BatchTimeout):
            error = self._late()
        elif isinstance(exc, GatewayError):
            error = exc
        elif isinstance(exc, ConcurrencyError):
            error = UpstreamUnavailable(f"gateway queue for {self.route.model!r}: {exc}")
        else:
            error = UpstreamUnavailable(f"gateway queue failed: {exc!r}")
        self._fail({text}, error)

    async def _launch(self, texts: list[str]) -> list[None]:
        """The batch function: wait for a free call slot, then start the call and return."""
        await self._slots.acquire()
        # A copy per call (calls of one request must not see each other's spans); with no
        # request's context, an empty one: the batch worker's is the first request's.
        context = contextvars.Context()
        calls: tracing.Served | None = None
        if tracing.is_enabled():
            origin, served = self._served(texts)
            if origin is not None:
                context = origin.copy()
            calls = context.run(tracing.serving, served)
            for text in texts:
                self._calls[text] = calls
        task = asyncio.create_task(
            self._call(texts, calls), name=f"redline-upstream-{self.route.model}", context=context
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return [None] * len(texts)

    async def _call(self, texts: list[str], calls: tracing.Served | None) -> None:
        """One upstream call for *texts*: hand out the rows, store them, then forget them."""
        released = False
        try:
            self.upstream_calls += 1
            self.upstream_inputs += len(texts)
            deadline = self._timer() + self._call_timeout
            try:
                reply = await self.route.embed(texts, dimensions=self.dimensions, deadline=deadline)
            except GatewayError as exc:
                self._fail(set(texts), exc)
                return
            except Exception as exc:
                self._fail(set(texts), UpstreamUnavailable(f"upstream call failed: {exc!r}"))
                return
            tokens = split_tokens(reply.prompt_tokens, [self._count(t) for t in texts])
            rows = {
                text: Row(vector, count)
                for text, vector, count in zip(texts, reply.vectors, tokens, strict=True)
            }
            if calls is not None:
                self._call_done(texts, calls)
            now = self._timer()
            for text, row in rows.items():
                future = self._inflight.get(text)
                if future is not None and not future.done():
                    future.set_result(row)
                    self._finished[text] = now
            self._slots.release()
            released = True
            keep = {text: row for text, row in rows.items() if text in self._keep}
            self._keep.difference_update(texts)
            try:
                if keep:
                    await self._store(keep)
            finally:
                self._forget_later(texts)
        finally:
            if calls is not None:
                self._call_done(texts, calls)
            if not released:
                self._slots.release()

    def _call_done(self, texts: list[str], calls: tracing.Served) -> None:
        """Requests asking for *texts* from now on do not join the call of *calls*."""
        for text in texts:
            if self._calls.get(text) is calls:
                del self._calls[text]

    def _fail(self, texts: set[str], error: GatewayError) -> None:
        """Fail the futures of *texts* and forget them (a later request tries again)."""
        self._keep.difference_update(texts)
        for text in texts:
            self._finished.pop(text, None)
            self._origins.pop(text, None)
            self._joined.pop(text, None)
            self._calls.pop(text, None)
            future = self._inflight.pop(text, None)
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: waiters re-raise it, nobody else logs it

    def _forget_later(self, texts: list[str]) -> None:
        """Drop the finished futures after the grace period (see the module docstring)."""
        futures = {text: self._inflight.get(text) for text in texts}

        def forget() -> None:
            for text, future in futures.items():
                if future is not None and self._inflight.get(text) is future:
                    del self._inflight[text]
                    self._finished.pop(text, None)

        with contextlib.suppress(RuntimeError):  # loop closing
            asyncio.get_running_loop().call_later(self._grace, forget)

    @property
    def inflight(self) -> int:
        """Distinct inputs on their way or within their grace period."""
        return len(self._inflight)

    def __repr__(self) -> str:
        return (
            f"Dispatcher({self.route.model!r}, dimensions={self.dimensions}, "
            f"inflight={len(self._inflight)}, calls={self.upstream_calls})"
        )


def _with_ids(count: Callable[[str], int]) -> Callable[[str], int]:
    """*count* for texts, one per id for token-id inputs."""

    def counted(text: str) -> int:
        return id_count(text) if is_ids(text) else count(text)

    return counted


async def _all_done(futures: list[asyncio.Future[Row]], timeout: float) -> bool:
    """Wait until every future is done (True) or *timeout* seconds pass (False).

    The futures are shared with other requests: a caller cancelled or timed out here leaves
    them running (what ``asyncio.wait`` over ``shield``-ed futures did, for less: one future
    and one timer per request instead of a shield, a task wrapper and callbacks per input).
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()
    left = len(futures)

    def one_done(_: asyncio.Future[Row]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not waiter.done():
            waiter.set_result(True)

    def expired() -> None:
        if not waiter.done():
            waiter.set_result(False)

    for future in futures:
        future.add_done_callback(one_done)
    timer = loop.call_later(timeout, expired)
    try:
        return await waiter
    finally:
        timer.cancel()
        for future in futures:
            future.remove_done_callback(one_done)
