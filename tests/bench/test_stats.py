"""LatencyHistogram: percentiles on known distributions, merging, encoding."""

from __future__ import annotations

import pickle

import pytest

from redline.bench import LoadResult
from redline.bench.stats import LatencyHistogram


def _uniform_ms(low: int, high: int) -> LatencyHistogram:
    hist = LatencyHistogram()
    for ms in range(low, high + 1):
        hist.record(ms / 1000.0)
    return hist


def test_uniform_1_to_1000_ms_percentiles_within_hdr_precision() -> None:
    summary = _uniform_ms(1, 1000).summary()
    assert summary.count == 1000
    assert summary.p50_ms == pytest.approx(500, rel=0.002)
    assert summary.p90_ms == pytest.approx(900, rel=0.002)
    assert summary.p99_ms == pytest.approx(990, rel=0.002)
    assert summary.p999_ms == pytest.approx(999, rel=0.002)
    assert summary.max_ms == pytest.approx(1000, rel=0.002)
    assert summary.min_ms == pytest.approx(1, rel=0.002)
    assert summary.mean_ms == pytest.approx(500.5, rel=0.002)


def test_bimodal_distribution_puts_the_tail_in_p99() -> None:
    hist = LatencyHistogram()
    for _ in range(980):
        hist.record(0.002)
    for _ in range(20):
        hist.record(0.500)
    assert hist.percentile_ms(50) == pytest.approx(2.0, rel=0.002)
    assert hist.percentile_ms(97) == pytest.approx(2.0, rel=0.002)
    assert hist.percentile_ms(99) == pytest.approx(500.0, rel=0.002)


def test_merge_equals_recording_everything_in_one() -> None:
    low, high = _uniform_ms(1, 500), _uniform_ms(501, 1000)
    low.merge(high)
    assert low.summary() == _uniform_ms(1, 1000).summary()


def test_encode_decode_and_pickle_round_trip() -> None:
    hist = _uniform_ms(1, 1000)
    assert LatencyHistogram.decode(hist.encode()).summary() == hist.summary()
    result = LoadResult(histogram=hist, completed=1000, ok=1000)
    copy = pickle.loads(pickle.dumps(result))
    assert copy.histogram.summary() == hist.summary()
    assert copy.completed == 1000


def test_empty_histogram_summarises_to_zeros() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert hist.summary().p99_ms == 0.0
    assert hist.percentile_ms(50) == 0.0
    assert "count=0" in repr(hist)


def test_bad_values_raise_value_error() -> None:
    hist = LatencyHistogram()
    with pytest.raises(ValueError, match=r"latency must be a non-negative number of seconds"):
        hist.record(-0.001)
    with pytest.raises(ValueError, match=r"percentile must be within 0..100, got 101"):
        hist.percentile_ms(101)


def test_distribution_is_monotonic_and_ends_at_the_tail() -> None:
    points = _uniform_ms(1, 1000).distribution(50)
    latencies = [latency for _p, latency in points]
    assert latencies == sorted(latencies)
    assert points[0][0] == 0.0
    assert latencies[-1] == pytest.approx(1000, rel=0.002)
