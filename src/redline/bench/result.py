"""What a load run measured (:class:`LoadResult`) and its live snapshots (:class:`LoadProgress`).

A result pickles (its HDR histogram travels encoded) and merges, so several generator
processes can each run a share of the load and be summed losslessly.

Example::

    total = results[0]
    for other in results[1:]:
        total.merge(other)
    total.histogram.summary().p99_ms, total.throughput
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redline.bench.stats import LatencyHistogram

__all__ = ["TIMELINE_SLOT_S", "LoadProgress", "LoadResult"]

#: Completions are filed by the slot (this many seconds into the measured phase) they ended in.
TIMELINE_SLOT_S = 0.1


@dataclass(frozen=True)
class LoadProgress:
    """A live snapshot for a progress bar."""

    elapsed_s: float
    completed: int
    errors: int
    recent_rps: float
    recent_p99_ms: float
    fraction: float | None


@dataclass
class LoadResult:
    """Everything measured in one run (warm-up excluded); merge results of several processes."""

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed_s: float = 0.0
    completed: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    server_timing_ms: dict[str, float] = field(default_factory=dict)
    server_timing_requests: int = 0
    server_timing_client_ms: float = 0.0
    late_sends: int = 0
    max_send_lag_ms: float = 0.0
    interrupted: bool = False
    warmup_completed: int = 0
    model: str | None = None
    #: Slot index (see TIMELINE_SLOT_S) -> latencies (ms) of the successes that ended in it.
    timeline: dict[int, array[float]] = field(default_factory=dict)
    #: Slot index -> errors that ended in it.
    timeline_errors: Counter[int] = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        """Completed requests per second (errors included)."""
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def merge(self, other: LoadResult) -> None:
        """Fold another process's result into this one (elapsed: the longer of the two)."""
        self.histogram.merge(other.histogram)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.completed += other.completed
        self.ok += other.ok
        self.errors.update(other.errors)
        self.statuses.update(other.statuses)
        self.cache.update(other.cache)
        for name, value in other.server_timing_ms.items():
            self.server_timing_ms[name] = self.server_timing_ms.get(name, 0.0) + value
        self.server_timing_requests += other.server_timing_requests
        self.server_timing_client_ms += other.server_timing_client_ms
        self.late_sends += other.late_sends
        self.max_send_lag_ms = max(self.max_send_lag_ms, other.max_send_lag_ms)
        self.interrupted = self.interrupted or other.interrupted
        self.warmup_completed += other.warmup_completed
        for slot, values in other.timeline.items():
            self.timeline.setdefault(slot, array("d")).extend(values)
        self.timeline_errors.update(other.timeline_errors)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["histogram"] = self.histogram.encode()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["histogram"] = LatencyHistogram.decode(state["histogram"])
        self.__dict__.update(state)
