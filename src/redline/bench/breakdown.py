"""Where the time went: split client latency into cache, queue, inference and other.

The preferred source is the ``Server-Timing`` header on every response (per-request stage
durations); when a server sends none, the ``/metrics`` deltas of the run are used instead
(mean queue wait and mean inference time per batch, an approximation). ``other`` is the
rest of the client-measured latency: HTTP parsing, framework, serialization and network.

Example::

    breakdown = compute_breakdown(result, delta)
    breakdown.bottleneck   # 'inference'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redline.bench.metrics_scrape import MetricsDelta
from redline.bench.result import LoadResult

__all__ = ["Breakdown", "compute_breakdown"]

_STAGE_METRICS = {
    "cache": "redline_cache_duration_seconds",
    "queue": "redline_batch_queue_wait_seconds",
    "inference": "redline_inference_duration_seconds",
}


@dataclass(frozen=True)
class Breakdown:
    """Mean milliseconds per request in each stage, their shares, and the largest one."""

    source: str | None = None
    client_mean_ms: float = 0.0
    stages_ms: dict[str, float] = field(default_factory=dict)
    server_total_ms: float | None = None

    @property
    def shares(self) -> dict[str, float]:
        """Each stage's fraction of the client-measured mean latency."""
        if self.client_mean_ms <= 0:
            return {name: 0.0 for name in self.stages_ms}
        return {name: value / self.client_mean_ms for name, value in self.stages_ms.items()}

    @property
    def bottleneck(self) -> str | None:
        """The stage with the largest share (``None`` without server-side data)."""
        if not self.stages_ms:
            return None
        return max(self.stages_ms, key=lambda name: self.stages_ms[name])

    def as_dict(self) -> dict[str, Any]:
        """The report's ``breakdown`` section."""
        return {
            "source": self.source,
            "client_mean_ms": self.client_mean_ms,
            "server_total_ms": self.server_total_ms,
            "stages_ms": dict(self.stages_ms),
            "shares": self.shares,
            "bottleneck": self.bottleneck,
        }


def compute_breakdown(result: LoadResult, delta: MetricsDelta | None = None) -> Breakdown:
    """Stage means from Server-Timing if responses carried it, else from metric deltas."""
    if result.server_timing_requests > 0:
        count = result.server_timing_requests
        client_mean = result.server_timing_client_ms / count
        stages = {
            name: total / count
            for name, total in result.server_timing_ms.items()
            if name not in ("total", "other")
        }
        server_total = result.server_timing_ms.get("total")
        return _finish(
            "server-timing",
            client_mean,
            stages,
            None if server_total is None else server_total / count,
        )
    if delta is not None and result.ok > 0:
        stages = {}
        for stage, metric in _STAGE_METRICS.items():
            mean = delta.histogram_mean_ms(metric)
            if mean is not None:
                stages[stage] = mean
        if stages:
            server_total = delta.histogram_mean_ms("redline_http_request_duration_seconds")
            return _finish("metrics", result.histogram.summary().mean_ms, stages, server_total)
    return Breakdown(client_mean_ms=result.histogram.summary().mean_ms)


def _finish(
    source: str, client_mean: float, stages: dict[str, float], server_total: float | None
) -> Breakdown:
    """Add ``other`` (what the named stages leave of the client latency) and build."""
    named = sum(stages.values())
    stages = {**stages, "other": max(client_mean - named, 0.0)}
    return Breakdown(source, client_mean, stages, server_total)
