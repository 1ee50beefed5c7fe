"""The batch side of the OpenTelemetry tracing (imported only when tracing is on): each request's
``queue.wait`` span, one ``batch`` span per model batch linked to every request it served, and
the requests whose inputs joined an identical one already in flight.

A job's ``trace`` (what ``serve.tracing.enqueue`` gave its request) changes as it goes:
a :class:`_Queued` while it waits; a :class:`_Joined` once other requests' identical inputs
joined it before its batch started; an :class:`_InBatch` once its batch started. The model
thread and the event loop both change it, under one lock that only tracing takes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, StatusCode

__all__ = ["JOINED", "BatchTracer", "Exemplar"]

T = TypeVar("T")
R = TypeVar("R")

Exemplar = dict[str, str]
_ROOT = Context()
#: On the link to a request whose input joined one in flight.
JOINED = {"redline.joined": True}


class _Queued:
    """The trace of one request's jobs: its span context and its ``queue.wait`` span, which
    ends when the last job starts (or leaves the queue)."""

    __slots__ = ("left", "queue", "request")

    def __init__(self, request: trace.SpanContext, queue: trace.Span, inputs: int) -> None:
        self.request = request
        self.queue = queue
        # One token per job, the span last: list.pop is atomic, so of the model thread and the
        # event loop popping at once exactly one gets the span, after every other job started.
        self.left: list[trace.Span | None] = [queue, *([None] * (inputs - 1))]

    def started(self, batch: trace.SpanContext | None) -> None:
        """One job's batch (*batch*) started: the wait links to it, and ends with the last."""
        if batch is not None and self.queue.is_recording():
            self.queue.add_link(batch)
        try:
            queue = self.left.pop()
        except IndexError:
            return
        if queue is not None:
            queue.end()

    @property
    def waiting(self) -> bool:
        """False once the request gave up (timed out, cancelled): a batch does not serve it."""
        return bool(self.left)

    def leave(self) -> None:
        """The request is done: end the span if some job never started."""
        while self.left:
            self.started(None)

    def exemplar(self) -> Exemplar:
        """The request's trace and its ``queue.wait`` span, as a Prometheus exemplar."""
        return _exemplar(self.queue.get_span_context())


class _Batch:
    """A ``batch`` span as the requests joining it late see it."""

    __slots__ = ("context", "ended", "linked", "span")

    def __init__(self, span: trace.Span, linked: set[int]) -> None:
        self.span = span
        self.context = span.get_span_context()
        self.linked = linked  # id() of every _Queued linked
        self.ended = False


class _Joined:
    """A job that requests with identical inputs joined before its batch started."""

    __slots__ = ("joiners", "own")

    def __init__(self, own: object, joiners: list[_Queued]) -> None:
        self.own = own
        self.joiners = joiners


class _InBatch:
    """A job whose batch started."""

    __slots__ = ("batch", "own")

    def __init__(self, own: object, batch: _Batch | None) -> None:
        self.own = own
        self.batch = batch  # None: no request it served was sampled when it started


def _own(trace_of_job: object) -> object:
    """The job's own request trace, whatever happened to the job since."""
    return trace_of_job.own if isinstance(trace_of_job, _Joined | _InBatch) else trace_of_job


def _exemplar(context: trace.SpanContext) -> Exemplar:
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class BatchTracer:
    """Queue waits, batch spans with their links, and exemplars of both."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._lock = threading.Lock()

    def enqueue(self, inputs: int) -> object:
        request = trace.get_current_span().get_span_context()
        if not request.trace_flags.sampled or inputs < 1:
            return None
        queue = self.tracer.start_span("queue.wait", attributes={"redline.inputs": inputs})
        return _Queued(request, queue, inputs)

    def leave_queue(self, jobs: Iterable[Any]) -> None:
        for job in jobs:
            queued = _own(job.trace)
            if isinstance(queued, _Queued):
                queued.leave()
                return  # every job of a request carries the same one

    def join(self, running: Any, duplicate: Any) -> None:
        """*duplicate*'s request is served by *running*'s computation (event loop)."""
        joiner = duplicate.trace
        if not isinstance(joiner, _Queued):
            return
        with self._lock:
            current = running.trace
            if isinstance(current, _InBatch):  # its batch started: link now
                batch = current.batch
                if batch is None:  # ran untraced (no sampled request in it at the start)
                    joiner.started(None)
                    return
                if not batch.ended and id(joiner) not in batch.linked:
                    batch.linked.add(id(joiner))
                    batch.span.add_link(joiner.request, JOINED)
                    batch.span.set_attribute("redline.batch.requests", len(batch.linked))
                joiner.started(batch.context)  # ended: the wait still links to the batch
            elif isinstance(current, _Joined):
                current.joiners.append(joiner)
            else:
                running.trace = _Joined(current, [joiner])

    def traced_batches(self, fn: Callable[[list[T]], R]) -> Callable[[list[T]], R]:
        lock = self._lock

        def run(jobs: list[T]) -> R:
            with lock:
                batch = self._start(jobs)
            if batch is None:
                return fn(jobs)
            span = batch.span
            token = otel_context.attach(trace.set_span_in_context(span, _ROOT))
            try:
                return fn(jobs)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
                raise
            finally:
                otel_context.detach(token)
                with lock:
                    batch.ended = True
                    span.end()

        return run

    def _start(self, jobs: Sequence[Any]) -> _Batch | None:
        """Open the batch span of *jobs*, linked to every sampled request they serve (None:
        none is sampled), and mark them started (under the lock)."""
        served: dict[int, _Queued] = {}
        owners: set[int] = set()
        for job in jobs:
            current = job.trace
            if isinstance(current, _InBatch):
                continue  # run again (a retry): its requests are linked already
            own = _own(current)
            if isinstance(own, _Queued) and own.waiting:
                served[id(own)] = own
                owners.add(id(own))
            if isinstance(current, _Joined):
                for joiner in current.joiners:
                    if joiner.waiting:
                        served[id(joiner)] = joiner
        joined = served.keys() - owners  # requests with no input of their own in the batch
        batch: _Batch | None = None
        if served:
            links = [
                Link(queued.request, JOINED if key in joined else None)
                for key, queued in served.items()
            ]
            attributes = {"redline.batch.size": len(jobs), "redline.batch.requests": len(links)}
            # Its own trace (the root context): one batch serves requests of many traces.
            span = self.tracer.start_span("batch", _ROOT, links=links, attributes=attributes)
            batch = _Batch(span, set(served))
        context = None if batch is None else batch.context
        for job in jobs:
            current = job.trace
            if isinstance(current, _InBatch):
                continue
            own = _own(current)
            job.trace = _InBatch(own, batch)  # later joiners find the batch (or that it ran)
            if isinstance(current, _Joined):
                for joiner in current.joiners:
                    joiner.started(context)
            if isinstance(own, _Queued):
                own.started(context)
        return batch

    def batch_exemplars(
        self, items: Sequence[Any]
    ) -> tuple[Exemplar | None, list[Exemplar | None]]:
        """The exemplar of the batch that ran *items*, and of each item's queue wait."""
        batch: Exemplar | None = None
        waits: list[Exemplar | None] = []
        for item in items:
            current = getattr(item, "trace", None)
            if batch is None and isinstance(current, _InBatch) and current.batch is not None:
                batch = _exemplar(current.batch.context)
            own = _own(current)
            waits.append(own.exemplar() if isinstance(own, _Queued) else None)
        return batch, waits
