"""Latency recording: an HDR histogram wrapper with millisecond percentiles.

Latencies are recorded in microseconds (1 µs .. 1 h, 3 significant digits), so every
percentile is exact to within 0.1 % of its value however many samples are recorded, and two
histograms (from two generator processes) merge losslessly.

Example::

    hist = LatencyHistogram()
    for seconds in (0.010, 0.020, 0.030):
        hist.record(seconds)
    hist.summary().p50_ms   # ~20.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hdrh.histogram import HdrHistogram

__all__ = ["LatencyHistogram", "LatencySummary"]

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of one histogram, in milliseconds (all 0.0 when nothing was recorded)."""

    count: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        """The summary as a JSON-ready dict (the report's ``latency_ms`` section)."""
        return asdict(self)


class LatencyHistogram:
    """Records latencies (seconds in, milliseconds out) in an HDR histogram.

    Example::

        hist = LatencyHistogram()
        hist.record(0.004)
        hist.percentile_ms(99.0)  # ~4.0
    """

    def __init__(self) -> None:
        self._hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS)

    @property
    def count(self) -> int:
        """Number of recorded latencies."""
        return int(self._hist.get_total_count())

    def record(self, seconds: float) -> None:
        """Record one latency given in seconds (clamped into 1 µs .. 1 h)."""
        if seconds != seconds or seconds < 0:  # NaN or negative
            raise ValueError(f"latency must be a non-negative number of seconds, got {seconds!r}")
        micros = min(max(round(seconds * 1_000_000), _LOWEST_US), _HIGHEST_US)
        self._hist.record_value(micros)

    def percentile_ms(self, percentile: float) -> float:
        """The latency at ``percentile`` (0..100) in milliseconds; 0.0 when empty."""
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {percentile!r}")
        if self.count == 0:
            return 0.0
        return float(self._hist.get_value_at_percentile(percentile)) / 1000.0

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` into this histogram."""
        self._hist.add(other._hist)

    def encode(self) -> bytes:
        """A compact, portable encoding (to ship a histogram between processes)."""
        return bytes(self._hist.encode())

    @classmethod
    def decode(cls, data: bytes) -> LatencyHistogram:
        """Rebuild a histogram from :meth:`encode` output."""
        hist = cls()
        hist._hist.decode_and_add(data)
        return hist

    def summary(self) -> LatencySummary:
        """Count, min, mean, p50/p90/p99/p99.9 and max in milliseconds."""
        if self.count == 0:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return LatencySummary(
            count=self.count,
            min_ms=float(self._hist.get_min_value()) / 1000.0,
            mean_ms=float(self._hist.get_mean_value()) / 1000.0,
            p50_ms=self.percentile_ms(50.0),
            p90_ms=self.percentile_ms(90.0),
            p99_ms=self.percentile_ms(99.0),
            p999_ms=self.percentile_ms(99.9),
            max_ms=float(self._hist.get_max_value()) / 1000.0,
        )

    def distribution(self, points: int = 200) -> list[tuple[float, float]]:
        """(percentile, latency_ms) pairs spread log-wise towards the tail, for plotting."""
        if self.count == 0:
            return []
        result: list[tuple[float, float]] = []
        for i in range(points):
            # 1 - 10^(-k): dense near 99, 99.9, 99.99 like HdrHistogram's own plots.
            tail_nines = 5.0 * i / (points - 1) if points > 1 else 0.0
            percentile = 100.0 * (1.0 - 10.0 ** (-tail_nines))
            result.append((percentile, self.percentile_ms(min(percentile, 100.0))))
        return result

    def __repr__(self) -> str:
        if self.count == 0:
            return "<LatencyHistogram count=0>"
        return (
            f"<LatencyHistogram count={self.count} p50={self.percentile_ms(50):.3f}ms "
            f"p99={self.percentile_ms(99):.3f}ms max={self.summary().max_ms:.3f}ms>"
        )
