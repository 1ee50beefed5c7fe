"""What the server's live status page shows (``GET /status.json``): windowed figures of this
process, built from its own metrics, cache counters and batch queue.

* requests: rate, p50 / p99 / max latency, 4xx and 5xx over the last ``window`` seconds
  (:class:`~redline.serve.recent.RecentRequests`), in flight now, total served;
* cache: hit ratio per tier over the window and since start;
* batches: the batch-size distribution (``redline_batch_size`` buckets, every local model
  together) over the window;
* queue: the batch queues' depth and capacity, every local model's added up;
* models: per local model (the default one first), its batch queue's depth and capacity,
  whether its batcher is alive, and its batches over the window (count, mean size);
* the event-loop lag when the server exports ``redline_event_loop_lag_seconds`` (a gauge, or
  a histogram whose window mean is shown).

Cumulative counters become windowed by differencing against the oldest snapshot this
:class:`StatusReporter` kept within the window (one snapshot per poll)::

    reporter = StatusReporter(state, window=10.0)
    document = reporter.document()      # a JSON-ready dict, ``kind == "server"``
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redline.serve.state import ServerState

__all__ = ["EVENT_LOOP_LAG", "NOT_SERVED_ROUTES", "StatusReporter"]

#: The metric the page shows as event-loop lag, when the server exports it.
EVENT_LOOP_LAG = "redline_event_loop_lag_seconds"
#: Operations routes that are not "requests served" (probes, scrapes, this page's polls).
NOT_SERVED_ROUTES = frozenset({"/health", "/ready", "/metrics", "/status", "/status.json"})

_Counters = dict[str, float]


class StatusReporter:
    """Build the status document of one app; keeps a few snapshots of cumulative counters.

    *window* is how many seconds the rates, percentiles and ratios cover; *clock* is the wall
    clock stamped on the document, *timer* the monotonic one the snapshots are aged with.
    """

    def __init__(
        self,
        state: ServerState,
        *,
        window: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        self.state = state
        self.window = window
        self._timer = timer
        self._clock = clock
        self._started = timer()
        self._snapshots: deque[tuple[float, _Counters]] = deque()

    def __repr__(self) -> str:
        return f"StatusReporter(window={self.window}, snapshots={len(self._snapshots)})"

    def document(self) -> dict[str, Any]:
        """The status as a JSON-ready dict (see the module docstring for what is in it)."""
        state = self.state
        metrics = state.metrics
        now = self._timer()
        counters = self._counters()
        base = self._base(now, counters)
        recent = metrics.recent.window(self.window, exclude=NOT_SERVED_ROUTES)
        in_flight = metrics.registry.get_sample_value("redline_http_requests_in_flight") or 0.0
        models = self._models(counters, base)
        return {
            "kind": "server",
            "title": "redline serve",
            "time": self._clock(),
            "uptime_seconds": now - self._started,
            "pid": os.getpid(),
            "workers": state.settings.workers,
            "window_seconds": recent.span_seconds,
            "requests": {
                "rate": recent.rate,
                "count": recent.count,
                "p50_seconds": recent.p50_seconds,
                "p99_seconds": recent.p99_seconds,
                "max_seconds": recent.max_seconds,
                "errors": recent.errors,
                "rejected": recent.rejected,
                # this poll is in flight too
                "in_flight": max(0, int(in_flight) - 1),
                "total": int(counters.get("requests", 0)),
            },
            "cache": self._cache(counters, base),
            "batches": self._batches(counters, base),
            "queue": {
                "depth": sum(m["queue"]["depth"] for m in models) if models else None,
                "capacity": sum(m["queue"]["capacity"] for m in models) if models else None,
            },
            "models": models,
            "event_loop_lag_seconds": self._lag(counters, base),
            "model": {
                "ready": state.ready,
                "ids": state.model_ids() if state.ready else [],
                "error": state.load_error,
            },
        }

    # -- cumulative counters and their window ----------------------------------------------

    def _counters(self) -> _Counters:
        """Every cumulative figure the document differences, flattened to name -> value."""
        values: _Counters = {}
        metrics = self.state.metrics
        for family in metrics.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and (
                    sample.labels.get("route") not in NOT_SERVED_ROUTES
                ):
                    values["requests"] = values.get("requests", 0.0) + sample.value
        for family in metrics.batch_size.collect():
            for sample in family.samples:
                # every local model's batches together (one sample per model)
                if sample.name.endswith("_bucket"):
                    key = f"batch:{sample.labels['le']}"
                elif sample.name.endswith(("_sum", "_count")):
                    key = f"batch{sample.name[sample.name.rfind('_') :]}"
                else:
                    continue
                values[key] = values.get(key, 0.0) + sample.value
                if not key.startswith("batch:"):  # and each model's count and sum
                    values[f"model:{sample.labels.get('model', '')}:{key}"] = sample.value
        if self.state.cache is not None:
            for tier in self.state.cache.stats().tiers:
                values[f"cache:{tier.name}:hits"] = tier.hits
                values[f"cache:{tier.name}:misses"] = tier.misses
                values[f"cache:{tier.name}:size"] = tier.size
        registry = metrics.registry
        for suffix in ("", "_sum", "_count"):
            value = registry.get_sample_value(EVENT_LOOP_LAG + suffix)
            if value is not None:
                values[f"lag{suffix}"] = value
        return values

    def _base(self, now: float, counters: _Counters) -> _Counters | None:
        """The oldest snapshot within the window (None on the first poll); keeps this one."""
        while self._snapshots and self._snapshots[0][0] < now - self.window:
            self._snapshots.popleft()
        base = self._snapshots[0][1] if self._snapshots else None
        self._snapshots.append((now, counters))
        return base

    def _cache(self, counters: _Counters, base: _Counters | None) -> list[dict[str, Any]]:
        if self.state.cache is None:
            return []
        tiers = []
        for tier in self.state.cache.stats().tiers:
            hits, misses = f"cache:{tier.name}:hits", f"cache:{tier.name}:misses"
            tiers.append(
                {
                    "tier": tier.name,
                    "hits": int(counters[hits]),
                    "misses": int(counters[misses]),
                    "size": tier.size,
                    "hit_ratio": _ratio(counters[hits], counters[misses]),
                    "window_hit_ratio": None
                    if base is None
                    else _ratio(
                        counters[hits] - base.get(hits, 0.0),
                        counters[misses] - base.get(misses, 0.0),
                    ),
                }
            )
        return tiers

    def _batches(self, counters: _Counters, base: _Counters | None) -> dict[str, Any]:
        """Per-bucket batch counts over the window (since start on the first poll)."""
        since = base or {}
        edges = [k for k in counters if k.startswith("batch:")]
        buckets, below = [], 0.0
        for key in sorted(edges, key=lambda k: float(k[6:])):
            cumulative = counters[key] - since.get(key, 0.0)
            buckets.append({"le": _bucket_label(key[6:]), "count": int(cumulative - below)})
            below = cumulative
        count = counters.get("batch_count", 0.0) - since.get("batch_count", 0.0)
        total = counters.get("batch_sum", 0.0) - since.get("batch_sum", 0.0)
        return {
            "window": base is not None,
            "count": int(count),
            "mean_size": total / count if count else None,
            "buckets": buckets,
        }

    def _models(self, counters: _Counters, base: _Counters | None) -> list[dict[str, Any]]:
        """Each local model's queue and batches over the window (since start on the first
        poll), the default model first."""
        since = base or {}
        models = []
        for name, engine in self.state.engines.items():
            health = engine.health()
            count_key, sum_key = f"model:{name}:batch_count", f"model:{name}:batch_sum"
            count = counters.get(count_key, 0.0) - since.get(count_key, 0.0)
            total = counters.get(sum_key, 0.0) - since.get(sum_key, 0.0)
            models.append(
                {
                    "name": name,
                    "default": engine is self.state.engine,
                    "alive": bool(health.get("alive", True)),
                    "queue": {
                        "depth": int(health["queue_depth"]),
                        "capacity": int(health["max_queue"]),
                    },
                    "batches": {
                        "count": int(count),
                        "mean_size": total / count if count else None,
                    },
                }
            )
        return models

    def _lag(self, counters: _Counters, base: _Counters | None) -> float | None:
        """The gauge's value, or the histogram's mean over the window."""
        if "lag" in counters:
            return counters["lag"]
        if "lag_count" not in counters:
            return None
        since = base or {}
        count = counters["lag_count"] - since.get("lag_count", 0.0)
        if count <= 0:
            return None
        return (counters["lag_sum"] - since.get("lag_sum", 0.0)) / count


def _ratio(hits: float, misses: float) -> float | None:
    return hits / (hits + misses) if hits + misses > 0 else None


def _bucket_label(le: str) -> str:
    """``"4.0"`` -> ``"4"``, ``"+Inf"`` stays."""
    value = float(le)
    return le if value == float("inf") else f"{value:g}"
