"""LoopHistogram: the exposition of a prometheus_client Histogram, without its locks."""

from __future__ import annotations

import re
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from redline.serve.metrics import LoopHistogram, ServerMetrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)
OBSERVED = [
    (("/a", "POST"), 0.0005, None),
    (("/a", "POST"), 0.001, {"trace_id": "ab" * 16, "span_id": "cd" * 8}),
    (("/b", "GET"), 0.05, None),
    (("/a", "POST"), 2.5, {"trace_id": "ef" * 16, "span_id": "01" * 8}),
    (("/a", "POST"), 0.2, None),
]


def _without_times(text: str) -> str:
    """The exposition less what differs between two histograms made apart: creation and
    exemplar timestamps."""
    text = re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 T", text)
    return re.sub(r"(# \{[^}]*\} \S+) \S+", r"\1 T", text)


@pytest.mark.parametrize("openmetrics_format", [False, True])
def test_a_loop_histogram_exposes_what_a_histogram_does(openmetrics_format: bool) -> None:
    render = openmetrics.generate_latest if openmetrics_format else generate_latest
    registries = []
    for kind in (Histogram, LoopHistogram):
        registry = CollectorRegistry(auto_describe=True)
        histogram = kind(
            "h_seconds", "Help.", ["route", "method"], buckets=BUCKETS, registry=registry
        )
        plain = kind("p_seconds", "Plain.", buckets=BUCKETS, registry=registry)
        for (route, method), amount, exemplar in OBSERVED:
            histogram.labels(route=route, method=method).observe(amount, exemplar)
            plain.observe(amount)
        registries.append(registry)
    expected, got = (_without_times(render(r).decode()) for r in registries)
    assert got == expected
    assert 'h_seconds_bucket{le="0.001",method="POST",route="/a"} 2.0' in got


def test_a_labelled_loop_histogram_is_observed_through_its_children() -> None:
    histogram = LoopHistogram("x", "X.", ["a"], buckets=BUCKETS, registry=CollectorRegistry())
    with pytest.raises(ValueError, match=r"x has labels \('a',\): observe a child"):
        histogram.observe(1.0)


def test_the_server_histograms_have_no_lock_in_one_process() -> None:
    metrics = ServerMetrics()
    metrics.observe_request("/v1/embeddings", "POST", 200, 0.002)
    metrics.observe_cache_lookup(0.0001)
    assert isinstance(metrics.request_duration, LoopHistogram)
    assert isinstance(metrics.cache_lookup, LoopHistogram)
    body, _ = metrics.render()
    text = body.decode()
    assert (
        'redline_http_request_duration_seconds_bucket{le="0.0025",method="POST",'
        'route="/v1/embeddings"} 1.0' in text
    )
    assert 'redline_cache_lookup_duration_seconds_bucket{le="0.0001"} 1.0' in text
    assert "redline_cache_lookup_duration_seconds_count 1.0" in text


def test_a_scrape_in_another_thread_sees_whole_observations_only() -> None:
    registry = CollectorRegistry(auto_describe=True)
    histogram = LoopHistogram("t_seconds", "T.", ["k"], buckets=BUCKETS, registry=registry)
    stop = threading.Event()
    child = histogram.labels(k="a")

    def observe() -> None:  # the one observing thread; every observation adds 1 to the sum
        while not stop.is_set():
            for _ in range(1000):
                child.observe(1.0)
            if len(histogram._children) < 50:  # the loop adds children as a scrape reads them
                histogram.labels(k=str(len(histogram._children)))

    observer = threading.Thread(target=observe)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a read lands mid-observation
    observer.start()
    try:
        torn = []
        for turn in range(20_000):
            if turn % 100 == 0:
                list(registry.collect())  # the children copied while the observer adds
            counts, amount, _ = child.snapshot()
            if sum(counts) != amount:
                torn.append((sum(counts), amount))
    finally:
        stop.set()
        observer.join()
        sys.setswitchinterval(interval)
    assert not torn[:1]
