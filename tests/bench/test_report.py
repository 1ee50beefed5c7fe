"""Report JSON schema, rendering, plot, breakdown and compare, from real runs."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from redline.bench import LoadConfig, LoadResult
from redline.bench.compare import compare_reports, comparison_rows
from redline.bench.report import (
    SCHEMA,
    load_report,
    render_report,
    write_json,
    write_plot,
)
from redline.bench.runner import BenchRun, bench
from redline.bench.workload import Workload
from redline.exceptions import BenchError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def report(app_url: str) -> dict[str, Any]:
    run = BenchRun(
        config=LoadConfig(url=app_url, concurrency=4, requests=200),
        workload=Workload(repeat=0.5, hot_set_size=4),
        label="base",
    )
    return asyncio.run(bench(run))


def _text(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    render_report(report, Console(file=buffer, width=120))
    return buffer.getvalue()


def test_report_has_the_documented_schema(report: dict[str, Any]) -> None:
    assert report["schema"] == SCHEMA == "redline.bench/1"
    assert set(report) == {
        "schema", "created", "label", "config", "summary", "latency_ms", "latency_distribution",
        "errors", "cache", "breakdown", "server_metrics", "timeline",
    }  # fmt: skip
    assert report["label"] == "base"
    config = report["config"]
    assert config["mode"] == "closed"
    assert config["concurrency"] == 4
    assert config["requests"] == 200
    assert config["processes"] == 1
    assert config["workload"]["path"] == "/v1/embeddings"
    summary = report["summary"]
    assert summary["requests"] == summary["ok"] == 200
    assert summary["errors"] == 0
    assert isinstance(summary["throughput_rps"], float)
    assert summary["interrupted"] is False
    assert set(report["latency_ms"]) == {
        "count",
        "min",
        "mean",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
    }
    latency = report["latency_ms"]
    assert (
        0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"] <= latency["max"]
    )
    curve = report["latency_distribution"]
    assert len(curve) == 60
    assert curve[0][0] == 0.0
    assert curve[-1][0] == pytest.approx(99.999)
    assert [ms for _p, ms in curve] == sorted(ms for _p, ms in curve)
    assert report["errors"] == {"by_kind": {}, "by_status": {"200": 200}}
    cache = report["cache"]
    assert cache["hit"] + cache["miss"] == 200
    assert 0.3 < cache["hit_ratio"] < 0.7
    assert cache["tiers"] == {}  # the test app exports no redline_cache_requests_total
    timeline = report["timeline"]
    assert sum(row["requests"] for row in timeline) == 200
    assert all(
        set(row)
        == {"t", "seconds", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
        for row in timeline
    )
    # the report is JSON-serialisable as is
    assert json.loads(json.dumps(report)) == report


def test_breakdown_from_server_timing_names_the_bottleneck(report: dict[str, Any]) -> None:
    breakdown = report["breakdown"]
    assert breakdown["source"] == "server-timing"
    stages = breakdown["stages_ms"]
    assert stages["cache"] == pytest.approx(0.5)
    assert stages["queue"] == pytest.approx(1.5)
    assert stages["inference"] == pytest.approx(3.0)
    assert set(stages) == {"cache", "queue", "inference", "other"}
    assert breakdown["server_total_ms"] == pytest.approx(5.5)
    assert breakdown["bottleneck"] == max(stages, key=stages.__getitem__)
    assert sum(breakdown["shares"].values()) == pytest.approx(1.0, abs=0.05) or stages["other"] == 0


def test_server_metrics_deltas_are_in_the_report(report: dict[str, Any]) -> None:
    metrics = report["server_metrics"]
    assert metrics is not None
    # the fixture app counts embeddings requests: exactly this run's 200
    assert (
        metrics["counters"]['redline_http_requests_total{route="/v1/embeddings",status="200"}']
        == 200
    )
    assert metrics["histograms"]["redline_inference_duration_seconds"]["count"] == 200


def test_breakdown_falls_back_to_metrics_without_server_timing(app_url: str) -> None:
    from redline.bench.breakdown import compute_breakdown
    from redline.bench.metrics_scrape import metrics_delta, parse_prometheus

    result = LoadResult(ok=10, completed=10)
    for _ in range(10):
        result.histogram.record(0.010)
    before = parse_prometheus(
        "redline_inference_duration_seconds_sum 0\nredline_inference_duration_seconds_count 0"
    )
    after = parse_prometheus(
        "redline_inference_duration_seconds_sum 0.06\nredline_inference_duration_seconds_count 10"
    )
    breakdown = compute_breakdown(result, metrics_delta(before, after))
    assert breakdown.source == "metrics"
    assert breakdown.stages_ms["inference"] == pytest.approx(6.0)
    assert breakdown.stages_ms["other"] == pytest.approx(4.0, rel=0.01)
    assert breakdown.bottleneck == "inference"
    assert compute_breakdown(result).source is None


def test_render_shows_throughput_percentiles_and_bottleneck(report: dict[str, Any]) -> None:
    text = _text(report)
    assert "throughput" in text
    assert "latency p99.9" in text
    assert "cache hit ratio" in text
    assert f"bottleneck: {report['breakdown']['bottleneck']}" in text


def test_json_round_trip_and_plot_is_a_png(report: dict[str, Any], tmp_path: Path) -> None:
    write_json(report, tmp_path / "run.json")
    assert load_report(tmp_path / "run.json") == report
    write_plot(report, tmp_path / "run.png")
    data = (tmp_path / "run.png").read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 5000


def test_load_report_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"schema": "x/1"}')
    with pytest.raises(BenchError, match=r"has schema 'x/1', expected 'redline.bench/1'"):
        load_report(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="is not valid JSON"):
        load_report(tmp_path / "bad.json")
    with pytest.raises(BenchError, match="cannot read report"):
        load_report(tmp_path / "missing.json")


def test_compare_two_reports_gives_ratios_vs_the_first(report: dict[str, Any]) -> None:
    faster = json.loads(json.dumps(report))
    faster["label"] = "faster"
    faster["summary"]["throughput_rps"] = report["summary"]["throughput_rps"] * 2
    faster["latency_ms"]["p99"] = report["latency_ms"]["p99"] / 4
    rows = {title: (values, ratios) for title, values, ratios in comparison_rows([report, faster])}
    assert rows["throughput (req/s)"][1] == [1.0, pytest.approx(2.0)]
    assert rows["p99 (ms)"][1] == [1.0, pytest.approx(0.25)]
    buffer = io.StringIO()
    Console(file=buffer, width=140).print(compare_reports([report, faster]))
    text = buffer.getvalue()
    assert "base" in text
    assert "faster" in text
    assert "(2.00x)" in text
    assert "(0.25x)" in text


def test_compare_needs_two_reports(report: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="compare needs at least 2 reports, got 1"):
        comparison_rows([report])


def test_plot_of_a_run_without_successes_is_still_a_png(tmp_path: Path) -> None:
    from redline.bench import Workload, build_report

    result = LoadResult(completed=3)
    result.errors["connection refused"] = 3
    empty = build_report(LoadConfig(url="http://127.0.0.1:1"), Workload(), result)
    assert empty["latency_distribution"] == []
    assert empty["breakdown"]["bottleneck"] is None
    write_plot(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)
    assert "error: connection refused" in _text(empty)


def test_metric_deltas_exclude_the_warmup(app_url: str) -> None:
    run = BenchRun(
        config=LoadConfig(url=app_url, concurrency=2, requests=50, warmup=0.3),
        workload=Workload(),
    )
    report = asyncio.run(bench(run))
    assert report["summary"]["warmup_requests"] > 0
    counters = report["server_metrics"]["counters"]
    assert counters['redline_http_requests_total{route="/v1/embeddings",status="200"}'] == 50


def _timeline_of(elapsed_s: float, slots: dict[int, int], errors: dict[int, int]) -> list[Any]:
    """The report timeline of a result with ``slots[i]`` 5 ms successes in 0.1 s slot i."""
    from array import array

    from redline.bench import Workload, build_report

    result = LoadResult(elapsed_s=elapsed_s)
    for slot, count in slots.items():
        result.timeline[slot] = array("d", [5.0] * count)
    result.timeline_errors.update(errors)
    timeline: list[Any] = build_report(LoadConfig(url="http://127.0.0.1:1"), Workload(), result)[
        "timeline"
    ]
    return timeline


def test_timeline_buckets_widen_with_the_run_and_include_empty_ones() -> None:
    # 10 s: 0.5 s buckets (at most 30 rows); slot 0.1 s each, one success per slot, none 3..4 s
    slots = {slot: 1 for slot in range(100) if not 30 <= slot < 40}
    timeline = _timeline_of(10.0, slots, {4: 2})
    assert [row["t"] for row in timeline] == [i * 0.5 for i in range(20)]
    assert all(row["seconds"] == 0.5 for row in timeline)
    assert timeline[0]["requests"] == 7  # 5 successes + 2 errors
    assert timeline[0]["errors"] == 2
    assert timeline[0]["rps"] == pytest.approx(14.0)
    assert timeline[6]["requests"] == timeline[7]["requests"] == 0  # the stall shows as zeros
    assert timeline[6]["p99_ms"] is None
    assert timeline[8]["p50_ms"] == timeline[8]["max_ms"] == 5.0


def test_timeline_rate_of_the_last_partial_bucket_is_per_second() -> None:
    # 1.45 s: 0.1 s buckets; the last one covers 0.05 s, its 5 requests are 100 req/s
    timeline = _timeline_of(1.45, {0: 10, 14: 5}, {})
    assert len(timeline) == 15
    assert timeline[0]["rps"] == pytest.approx(100.0)
    assert timeline[-1]["t"] == pytest.approx(1.4)
    assert timeline[-1]["seconds"] == pytest.approx(0.05)
    assert timeline[-1]["rps"] == pytest.approx(100.0)
