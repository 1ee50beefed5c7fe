"""The inference engine: every input text of every request goes through one micro-batcher,
so concurrent requests share model calls; per-request queue and inference times come back
for the ``Server-Timing`` header. No request waits on the batcher without a deadline: each
``embed`` call gets ``request_timeout`` seconds (queue + model) unless it passes its own.

Example::

    engine = InferenceEngine(HashingModel(8), max_batch_size=32, max_wait=0.002)
    await engine.start()
    vectors, timing = await engine.embed(["a", "b"])   # (2, 8) float32
    await engine.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from redline.concurrency.batcher import BatchRecord, MicroBatcher
from redline.serve import tracing
from redline.serve.model import Model, run_batch

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "EngineTiming", "InferenceEngine"]

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds an ``embed`` call waits for its vectors by default: under nginx's 60 s read timeout."""


@dataclass(slots=True)
class _Job:
    """One input text on its way through the batcher; the worker stamps its times."""

    text: str
    submitted: float
    trace: object = None  # serve.tracing.enqueue(): the request's span and its queue.wait span
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineTiming:
    """Seconds the slowest input of a request waited in the queue and spent in the model."""

    queue: float
    inference: float


class InferenceEngine:
    """Runs a :class:`Model` behind a :class:`MicroBatcher` (model calls in a worker thread).

    *request_timeout* bounds every ``embed`` call that does not pass its own ``timeout``: past
    it the call raises :class:`~redline.exceptions.BatchTimeout` and its inputs still queued are
    dropped.
    """

    def __init__(
        self,
        model: Model,
        *,
        max_batch_size: int = 32,
        max_wait: float = 0.002,
        max_queue: int = 1024,
        on_batch: Callable[[BatchRecord], None] | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, got {request_timeout}")
        self.model = model
        self.request_timeout = float(request_timeout)
        self._timer = timer
        self.max_queue = max_queue
        self._batcher: MicroBatcher[_Job, npt.NDArray[np.float32]] = MicroBatcher(
            tracing.traced_batches(self._run),
            max_batch_size=max_batch_size,
            max_wait=max_wait,
            max_queue=max_queue,
            dedup_key=_text_of,
            name=f"model:{model.name}",
            on_batch=on_batch,
            on_duplicate=tracing.duplicates(),  # None (no cost) when tracing is off
        )

    def _run(self, jobs: list[_Job]) -> list[npt.NDArray[np.float32]]:
        """The batch function (worker thread): one model call for the whole batch."""
        started = self._timer()
        with tracing.span("model.forward", {"redline.model": self.model.name}):
            array = run_batch(self.model, [job.text for job in jobs])
        finished = self._timer()
        for job in jobs:
            job.started, job.finished = started, finished
        return list(array)

    async def start(self) -> None:
        """Start the batch worker."""
        await self._batcher.start()

    async def embed(
        self, texts: list[str], *, timeout: float | None = None
    ) -> tuple[npt.NDArray[np.float32], EngineTiming]:
        """Embed *texts* within *timeout* seconds (default ``request_timeout``).

        Raises ``BatchTimeout`` past the deadline, ``Overloaded`` when the queue is full and
        ``Closed`` after close; on any failure, the request's other inputs leave the queue.
        """
        deadline = self.request_timeout if timeout is None else timeout
        now = self._timer()
        trace = tracing.enqueue(len(texts))
        jobs = [_Job(text, now, trace) for text in texts]
        try:
            rows = await self._submit_all(jobs, deadline)
        finally:
            tracing.leave_queue(jobs)
        queue = max((job.started - job.submitted for job in jobs if job.started), default=0.0)
        inference = max((job.finished - job.started for job in jobs if job.started), default=0.0)
        if len(rows) == 1:  # the usual request: a copy of one row, without np.stack's cost
            array = rows[0].reshape(1, -1).copy()
        else:
            array = np.stack(rows) if rows else np.empty((0, self.model.dimension), np.float32)
        return array, EngineTiming(queue=queue, inference=inference)

    async def _submit_all(self, jobs: list[_Job], timeout: float) -> list[npt.NDArray[np.float32]]:
        """Submit every job; the first failure cancels the rest (nothing left queued for it).

        When the queue has room for every job they are queued at once (``submit_many``: a
        future per input, not a task per input); when it has not, each is submitted on its
        own, so the ones that fit start before the rest is refused with ``Overloaded``.
        """
        if len(jobs) == 1:
            return [await self._batcher.submit(jobs[0], timeout=timeout)]
        if self._batcher.health().queue_depth + len(jobs) <= self.max_queue:
            return await self._batcher.submit_many(jobs, timeout=timeout)
        tasks = [asyncio.ensure_future(self._batcher.submit(job, timeout=timeout)) for job in jobs]
        try:
            return await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # a no-op for the finished ones

    def health(self) -> dict[str, Any]:
        """The batcher's health (alive, restarts, last_error, queue_depth, max_queue)."""
        health = self._batcher.health()
        return dict(health) if isinstance(health, dict) else _as_dict(health)

    def stats(self) -> Any:
        """The batcher's statistics snapshot."""
        return self._batcher.stats()

    @property
    def batcher(self) -> MicroBatcher[_Job, npt.NDArray[np.float32]]:
        """The underlying batcher (tests kill its worker to check /ready)."""
        return self._batcher

    async def close(self, *, drain: bool = True) -> None:
        """Stop taking work; with *drain*, finish what is queued first."""
        await self._batcher.close(drain=drain)

    def __repr__(self) -> str:
        return f"InferenceEngine(model={self.model.name!r}, batcher={self._batcher!r})"


def _text_of(job: _Job) -> str:
    """Identical texts in flight at once are computed once."""
    return job.text


def _as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass-ish health snapshot as a plain dict."""
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields is not None:
        return {name: getattr(obj, name) for name in fields}
    return dict(vars(obj))
