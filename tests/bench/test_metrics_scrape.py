"""Server-Timing and Prometheus text parsing, scrape deltas."""

from __future__ import annotations

import pytest

from redline.bench.metrics_scrape import (
    metrics_delta,
    metrics_url_for,
    parse_prometheus,
    parse_server_timing,
)

BEFORE = """
# HELP redline_http_requests_total Requests.
# TYPE redline_http_requests_total counter
redline_http_requests_total{route="/v1/embeddings",status="200"} 10
redline_cache_requests_total{tier="l1",result="hit"} 4
redline_inference_duration_seconds_sum 0.5
redline_inference_duration_seconds_count 5
redline_up 1
"""

AFTER = """
redline_http_requests_total{route="/v1/embeddings",status="200"} 110
redline_http_requests_total{route="/v1/embeddings",status="500"} 3
redline_cache_requests_total{tier="l1",result="hit"} 54
redline_cache_requests_total{tier="l1",result="miss"} 50
redline_inference_duration_seconds_sum 1.5
redline_inference_duration_seconds_count 25
redline_up 1
"""


def test_server_timing_parses_every_stage_in_ms() -> None:
    header = 'cache;dur=0.25, queue;dur=1.5, inference;desc="model";dur=3, total;dur=5.1'
    assert parse_server_timing(header) == {
        "cache": 0.25,
        "queue": 1.5,
        "inference": 3.0,
        "total": 5.1,
    }


def test_server_timing_skips_entries_without_or_with_bad_duration() -> None:
    assert parse_server_timing("miss, cache;desc=x, queue;dur=abc, ok;dur=2") == {"ok": 2.0}
    assert parse_server_timing("") == {}


def test_prometheus_text_parses_labels_and_skips_comments() -> None:
    samples = parse_prometheus(BEFORE)
    key = ("redline_http_requests_total", (("route", "/v1/embeddings"), ("status", "200")))
    assert samples[key] == 10
    assert samples[("redline_up", ())] == 1
    assert len(samples) == 5


def test_delta_subtracts_before_from_after() -> None:
    delta = metrics_delta(parse_prometheus(BEFORE), parse_prometheus(AFTER))
    assert delta.total("redline_http_requests_total") == 103
    assert delta.total("redline_http_requests_total", status="500") == 3
    assert delta.total("redline_cache_requests_total", result="hit") == 50
    # 1.0 s over 20 inferences = 50 ms each
    assert delta.histogram_mean_ms("redline_inference_duration_seconds") == pytest.approx(50.0)
    assert delta.histogram_mean_ms("redline_missing_seconds") is None
    assert delta.histograms()["redline_inference_duration_seconds"]["count"] == 20
    counters = delta.counters()
    assert counters['redline_cache_requests_total{result="miss",tier="l1"}'] == 50
    assert "redline_up" not in str(counters)


def test_metrics_url_is_the_server_root_metrics_path() -> None:
    assert metrics_url_for("http://127.0.0.1:8000/v1/x?y=1") == "http://127.0.0.1:8000/metrics"
