"""Prometheus metrics of one server app, in a per-app ``CollectorRegistry`` (no global state).

With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn workers), values are written to that
directory by every worker and ``/metrics`` aggregates them with ``MultiProcessCollector``.

Example::

    metrics = ServerMetrics()
    metrics.requests.labels(route="/v1/embeddings", method="POST", status="200").inc()
    body, content_type = metrics.render()
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from redline.cache.base import CacheStats
from redline.serve import tracing
from redline.serve.recent import RecentRequests

__all__ = [
    "OTHER_METHOD",
    "GatewayMetrics",
    "InFlight",
    "LoopHistogram",
    "ServerMetrics",
    "method_label",
]

#: The ``method`` label of a request whose method its route does not serve.
OTHER_METHOD = "other"
#: Methods a request that matched no route is labelled with (RFC 9110's, and PATCH).
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LAG_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


def method_label(method: str, served: Collection[str] | None) -> str:
    """*method* if the route serves it (a standard method if no route matched), else
    ``"other"``: the label takes a bounded set of values whatever methods clients send.

    >>> method_label("PROPFIND", {"POST"})
    'other'
    """
    return method if method in (_STANDARD_METHODS if served is None else served) else OTHER_METHOD


class _Batch(Protocol):
    """What the micro-batcher's ``on_batch`` record carries (only the fields used here)."""

    @property
    def size(self) -> int: ...
    @property
    def run_seconds(self) -> float: ...
    @property
    def queue_waits(self) -> Sequence[float]: ...
    @property
    def error(self) -> object: ...
    @property
    def items(self) -> Sequence[Any]: ...


class GatewayMetrics:
    """The gateway's series (a ``redline.gateway.observer.GatewayObserver``), per upstream:

    - ``redline_upstream_requests_total{upstream, result}``: calls by result (``ok``, or the
      kind of failure: ``timeout``, ``connect``, ``http_429``, ``http_4xx``, ``http_5xx``,
      ``invalid_response``, ``cancelled``); each retry is a call
    - ``redline_upstream_request_duration_seconds{upstream}``: duration of each call
    - ``redline_upstream_batch_size{upstream}``: inputs per call
    - ``redline_upstream_ejections_total{upstream}``, ``redline_upstream_ejected{upstream}``
      (1 from an ejection until a call succeeds again)

    and, per upstream model (the cache and coalescing sit in front of the upstreams):
    ``redline_gateway_inputs_total{model, source}``, where ``source`` is ``cache``,
    ``coalesced`` (joined an identical input in flight, or repeated in the request) or
    ``upstream`` (queued for an upstream call).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "redline_upstream_requests",
            "Calls to an upstream embeddings API, by result.",
            ["upstream", "result"],
            registry=r,
        )
        self.duration = Histogram(
            "redline_upstream_request_duration_seconds",
            "Duration of one call to an upstream.",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "redline_upstream_batch_size",
            "Inputs per upstream call.",
            ["upstream"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.ejections = Counter(
            "redline_upstream_ejections",
            "Times an upstream was taken out of rotation after failures.",
            ["upstream"],
            registry=r,
        )
        self.ejected = Gauge(
            "redline_upstream_ejected",
            "1 while an upstream is out of rotation (until a call to it succeeds again).",
            ["upstream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.inputs_total = Counter(
            "redline_gateway_inputs",
            "Inputs asked of an upstream model, by where they came from.",
            ["model", "source"],
            registry=r,
        )
        self._calls: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._sources: dict[str, tuple[Any, Any, Any]] = {}

    def upstream_call(self, upstream: str, inputs: int, seconds: float, result: str) -> None:
        children = self._calls.get((upstream, result))
        if children is None:
            children = (
                self.requests.labels(upstream=upstream, result=result),
                self.duration.labels(upstream=upstream),
                self.batch_size.labels(upstream=upstream),
            )
            self._calls[(upstream, result)] = children
        children[0].inc()
        children[1].observe(seconds)
        children[2].observe(inputs)

    def upstream_state(self, upstream: str, *, ejected: bool, ejection: bool) -> None:
        if ejection:
            self.ejections.labels(upstream=upstream).inc()
        else:
            self.ejections.labels(upstream=upstream).inc(0)  # the series exists from the start
        self.ejected.labels(upstream=upstream).set(1 if ejected else 0)

    def inputs(self, model: str, *, cached: int, coalesced: int, sent: int) -> None:
        children = self._sources.get(model)
        if children is None:
            labels = self.inputs_total.labels
            children = (
                labels(model=model, source="cache"),
                labels(model=model, source="coalesced"),
                labels(model=model, source="upstream"),
            )
            self._sources[model] = children
        if cached:
            children[0].inc(cached)
        if coalesced:
            children[1].inc(coalesced)
        if sent:
            children[2].inc(sent)

    def __repr__(self) -> str:
        return f"GatewayMetrics(upstreams={sorted({u for u, _ in self._calls})})"


class InFlight:
    """A level changed by one thread (the event loop's), without a lock: cheaper than a
    ``Gauge`` per request; a gauge reads :meth:`get` when scraped."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def get(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return f"InFlight({self.value})"


class LoopHistogram:
    """A Prometheus histogram observed by one thread (the event loop's) without a lock: the
    same series and exposition as a ``Histogram`` of the same name, labels and buckets (a
    ``Histogram`` takes a lock twice per observation, which a request pays twice).

    Only one thread observes it; a scrape may run in another (``/metrics`` renders in a
    thread) and still sees whole observations only: each child's counts and sum are read as
    one snapshot (a sequence number the observer bumps before and after each observation,
    read again after the copy). ``labels(...)`` returns the child to
    ``observe(amount, exemplar)``; with no label names, observe the histogram itself.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(bound) for bound in buckets]
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        self._les = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], _LoopHistogramChild] = {}
        self._own = None if self.labelnames else self._child(())
        registry.register(self)

    def labels(self, **labels: str) -> _LoopHistogramChild:
        """The child of these label values (made on first use, as a ``Histogram``'s)."""
        values = tuple(str(labels[name]) for name in self.labelnames)
        child = self._children.get(values)
        return child if child is not None else self._child(values)

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Observe *amount* (a histogram without labels)."""
        if self._own is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: observe a child")
        self._own.observe(amount, exemplar)

    def _child(self, values: tuple[str, ...]) -> _LoopHistogramChild:
        child = self._children[values] = _LoopHistogramChild(self._bounds)
        return child

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "histogram")]

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        created = getattr(prometheus_metrics, "_use_created", True)  # the library's switch
        for values, child in list(self._children.items()):  # one copy: the loop may add
            labels = dict(zip(self.labelnames, values, strict=True))
            counts, amount, exemplars = child.snapshot()
            total = 0
            for le, count, exemplar in zip(self._les, counts, exemplars, strict=True):
                total += count
                metric.add_sample(
                    f"{self.name}_bucket", {**labels, "le": le}, float(total), None, exemplar
                )
            metric.add_sample(f"{self.name}_count", labels, float(total))
            metric.add_sample(f"{self.name}_sum", labels, amount)
            if created:
                metric.add_sample(f"{self.name}_created", labels, child.created)
        yield metric

    def __repr__(self) -> str:
        return f"LoopHistogram({self.name!r}, children={len(self._children)})"


class _LoopHistogramChild:
    """One label set's buckets (not cumulative), sum and exemplars; ``sequence`` is odd while
    an observation is being made (see :meth:`snapshot`)."""

    __slots__ = ("_bounds", "counts", "created", "exemplars", "sequence", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.sum = 0.0
        self.sequence = 0
        self.created = time.time()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        index = bisect_left(self._bounds, amount)  # the first bucket with amount <= its bound
        self.sequence += 1
        self.counts[index] += 1
        self.sum += amount
        if exemplar:
            self.exemplars[index] = Exemplar(exemplar, amount, time.time())
        self.sequence += 1

    def snapshot(self) -> tuple[list[int], float, list[Exemplar | None]]:
        """Counts, sum and exemplars as of one moment between observations (read again
        while the one observing thread was midway through one)."""
        while True:
            before = self.sequence
            counts, amount, exemplars = self.counts.copy(), self.sum, self.exemplars.copy()
            if before % 2 == 0 and self.sequence == before:
                return counts, amount, exemplars
            time.sleep(0)  # let the observer finish


class ServerMetrics:
    """Every series the server exports, registered on a private registry."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "redline_http_requests", "HTTP requests.", ["route", "method", "status"], registry=r
        )
        # Observed on the loop per request (and per cache lookup): without a lock in one
        # process; with several, a ``Histogram`` (its values go to the shared directory).
        loop_histogram: type[Histogram] | type[LoopHistogram] = (
            Histogram if self.multiprocess else LoopHistogram
        )
        self.request_duration = loop_histogram(
            "redline_http_request_duration_seconds",
            "HTTP request duration.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        in_flight = Gauge(
            "redline_http_requests_in_flight",
            "HTTP requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )
        #: ``inc()`` / ``dec()`` per request: a plain count the gauge reads at each scrape (a
        #: Gauge takes a lock on both); with several workers, the gauge itself (its value is
        #: written to the shared directory for ``livesum``).
        self.in_flight: InFlight | Gauge = in_flight
        if not self.multiprocess:
            self.in_flight = level = InFlight()
            in_flight.set_function(level.get)
        self.cache_requests = Counter(
            "redline_cache_requests", "Cache lookups per tier.", ["tier", "result"], registry=r
        )
        self.cache_events = Counter(
            "redline_cache_events",
            "Cache health events per tier: failures by cause and state changes.",
            ["tier", "event"],
            registry=r,
        )
        # Per local model (``model``: its name): several models each have a batcher.
        self.batch_size = Histogram(
            "redline_batch_size",
            "Inputs per model call.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "redline_batch_queue_depth",
            "Inputs waiting for a batch.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            "redline_batch_queue_capacity",
            "Inputs the batch queue holds before requests get 429 (REDLINE_MAX_QUEUE).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "redline_batch_queue_wait_seconds",
            "Time an input waited for its batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "redline_inference_duration_seconds",
            "Duration of one model call.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_lookup = loop_histogram(
            "redline_cache_lookup_duration_seconds",
            "Duration of one request's cache lookup (every tier it reached).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_load = Gauge(
            "redline_model_load_seconds",
            "Seconds it took to load and warm the model.",
            registry=r,
            multiprocess_mode="max",
        )
        self.write_behind_backlog = Gauge(
            "redline_write_behind_backlog",
            "Usage records waiting to be written.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loop_lag = Histogram(
            "redline_event_loop_lag_seconds",
            "How late the event loop ran a timer, sampled every 10 ms: time the loop was "
            "held by work that is not awaiting.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        #: This process's newest requests, for the windowed figures of ``/status.json``.
        self.recent = RecentRequests()
        self._keep_recent, self._now = self.recent.append, self.recent.timer
        self._cache_seen: dict[tuple[str, str], int] = {}
        self.batch_errors = Counter(
            "redline_batch_errors", "Model calls that raised.", ["model"], registry=r
        )
        #: the gateway's series (registered here, filled only when upstreams are configured)
        self.gateway = GatewayMetrics(r)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request (labelled children are cached: this runs per request)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route=route, method=method, status=str(status)),
                self.request_duration.labels(route=route, method=method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds, tracing.exemplar())  # None unless a sampled span is on
        self._keep_recent((self._now(), route, status, seconds))

    def sync_cache(self, stats: CacheStats) -> None:
        """Bring ``redline_cache_requests_total`` and ``redline_cache_events_total`` up to the
        cache's own per-tier counters."""
        for tier in stats.tiers:
            for result, value in (("hit", tier.hits), ("miss", tier.misses)):
                key = (tier.name, result)
                delta = value - self._cache_seen.get(key, 0)
                if delta > 0:
                    self.cache_requests.labels(tier=tier.name, result=result).inc(delta)
                    self._cache_seen[key] = value
            for event, value in tier.events.items():
                key = (tier.name, event)
                delta = value - self._cache_seen.get(key, 0)
                if delta > 0:
                    self.cache_events.labels(tier=tier.name, event=event).inc(delta)
                    self._cache_seen[key] = value

    def batch_observer(self, model: str) -> Callable[[_Batch], None]:
        """The micro-batcher's ``on_batch`` hook for the local model named *model*: its
        batch size, queue waits, model call duration and errors, labelled ``model``; the
        series exist (at zero) from this call on. The model call's and the queue waits'
        exemplars are the batch's span and each input's request, when traced."""
        size = self.batch_size.labels(model=model)
        inference = self.inference.labels(model=model)
        queue_wait = self.queue_wait.labels(model=model)
        errors = self.batch_errors.labels(model=model)

        def observe(record: _Batch) -> None:
            batch, exemplars = tracing.batch_exemplars(record.items)  # (None, []) when off
            waits = record.queue_waits
            size.observe(record.size)
            inference.observe(record.run_seconds, batch)
            if len(exemplars) == len(waits):
                for wait, exemplar in zip(waits, exemplars, strict=True):
                    queue_wait.observe(wait, exemplar)
            else:
                for wait in waits:
                    queue_wait.observe(wait)
            if record.error is not None:
                errors.inc()

        return observe

    def observe_queue(self, model: str, depth: int, capacity: int) -> None:
        """The batch queue of the local model named *model* (set at each scrape)."""
        self.queue_depth.labels(model=model).set(depth)
        self.queue_capacity.labels(model=model).set(capacity)

    def observe_cache_lookup(self, seconds: float) -> None:
        """One cache lookup of a request (call it inside the ``cache.lookup`` span: that span
        is the exemplar when traced)."""
        self.cache_lookup.observe(seconds, tracing.exemplar())

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics (with the histograms' trace
        exemplars) when *accept*, a request's ``Accept`` header, asks for it, else the
        Prometheus text format."""
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if "application/openmetrics-text" in accept:
            body = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
            return body, openmetrics.CONTENT_TYPE_LATEST
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def __repr__(self) -> str:
        return f"ServerMetrics(multiprocess={self.multiprocess})"
