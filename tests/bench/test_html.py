"""``redline bench --html`` and ``bench compare --html``: real runs, opened in headless Chromium.

Each page is loaded at desktop width (1200 px) and phone width (400 px); a full-page
screenshot of each is kept in the test's tmp dir (``pytest --basetemp`` to choose where).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redline.bench.compare import COMPARED_METRICS, comparison_rows
from redline.bench.config import LoadConfig
from redline.bench.html import render_html
from redline.bench.report import write_json
from redline.bench.runner import BenchRun, bench
from redline.bench.server_process import ServerProcess
from redline.bench.workload import Workload
from tests.bench._chromium import Browser, Visit

HASHING = "redline.serve.testing:create_hashing_model"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real ``redline serve`` (hashing model, memory cache): Server-Timing and /metrics."""
    process = ServerProcess(model=HASHING, cache_url="memory://", ready_timeout=60.0)
    asyncio.run(process.__aenter__())
    try:
        yield process.url
    finally:
        process.stop()


def _redline(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redline", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def _bench(url: str, out: Path, name: str, *extra: str) -> dict[str, Any]:
    """``redline bench URL … --json --html`` as a person runs it; the report it wrote."""
    json_path, html_path = out / f"{name}.json", out / f"{name}.html"
    _redline(
        "bench",
        url,
        "--label",
        name,
        "--json",
        str(json_path),
        "--html",
        str(html_path),
        "-q",
        *extra,
    )
    report: dict[str, Any] = json.loads(json_path.read_text())
    return report


def _run_in_process(url: str, label: str) -> dict[str, Any]:
    run = BenchRun(LoadConfig(url=url, concurrency=2, requests=600), Workload(), label=label)
    return asyncio.run(bench(run))


def _open(browser: Browser, page: Path) -> list[Visit]:
    """The page at desktop and phone width: offline, no console error, no sideways scroll."""
    visits = []
    for width in (1200, 400):
        shot = page.with_name(f"{page.stem}-{width}px.png")
        visit = browser.visit(page, width=width, screenshot=shot, mobile=width < 600)
        assert visit.requests == [page.resolve().as_uri()]  # nothing but the file itself
        assert visit.console_errors == []
        assert visit.viewport_width == width
        assert visit.scroll_width <= width  # nothing wider than a phone screen
        assert shot.read_bytes().startswith(PNG_MAGIC)
        assert "<script" not in visit.dom
        visits.append(visit)
    assert visits[0].figures == visits[1].figures
    return visits


def _number(text: str) -> float:
    found = re.match(r"-?[\d,]+(?:\.\d+)?", text)
    assert found, text
    return float(found.group().replace(",", ""))


def _figures(visit: Visit, run: str = "") -> dict[str, str]:
    return {name: text for where, name, text in visit.figures if where == run}


def test_html_report_of_a_run_shows_its_figures_and_charts(
    server: str, browser: Browser, tmp_path: Path
) -> None:
    report = _bench(server, tmp_path, "base", "-c", "4", "-d", "2", "--repeat", "0.5")
    visit = _open(browser, tmp_path / "base.html")[0]
    shown = _figures(visit)

    summary, latency = report["summary"], report["latency_ms"]
    assert summary["errors"] == 0
    assert summary["requests"] > 100
    assert _number(shown["requests"]) == summary["requests"]
    assert _number(shown["throughput_rps"]) == pytest.approx(summary["throughput_rps"], abs=0.05)
    # Shown to 2 decimals: within half a unit, plus the float error of a value on the
    # boundary (9.295 is stored as 9.29499..., shown 9.29, off by 0.0050000001).
    half = 0.005 + 1e-9
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        assert _number(shown[f"latency_{key}"]) == pytest.approx(latency[key], abs=half)
        assert _number(shown[f"table_{key}"]) == pytest.approx(latency[key], abs=half)
    assert _number(shown["elapsed_s"]) == pytest.approx(summary["elapsed_s"], abs=half)
    assert shown["error_ratio"] == "0.0%"
    assert _number(shown["cache_hit_ratio"]) == pytest.approx(
        100 * report["cache"]["hit_ratio"], abs=0.05
    )
    assert shown["no-errors"] == "No errors."
    assert _number(shown["status:200"]) == summary["requests"]

    breakdown = report["breakdown"]
    assert breakdown["source"] == "server-timing"
    assert shown["bottleneck"] == breakdown["bottleneck"]
    for stage, mean_ms in breakdown["stages_ms"].items():
        assert _number(shown[f"stage:{stage}"]) == pytest.approx(mean_ms, abs=0.005)
    assert shown[f"stage:{breakdown['bottleneck']}"].endswith("◀")

    timeline = report["timeline"]
    assert timeline[1]["t"] == timeline[1]["seconds"] == 0.1  # a 2 s run: 0.1 s buckets
    short_tail = timeline[-1]["seconds"] < 0.05
    drawn = timeline[:-1] if short_tail else timeline
    assert len(drawn) >= 19
    charts = visit.charts
    assert charts["latency-over-time"] == {
        name: sum(1 for row in drawn if row[f"{name}_ms"] is not None)
        for name in ("p50", "p90", "p99", "max")
    }
    assert charts["percentiles"] == {"base": len(report["latency_distribution"])}
    assert charts["throughput-over-time"] == {"requests/s": len(drawn)}
    assert charts["breakdown"] == {"base": len(breakdown["stages_ms"])}
    assert "errors-by-kind" not in charts


def test_html_report_counts_errors_by_kind(app_url: str, browser: Browser, tmp_path: Path) -> None:
    # /v1/flaky answers every 3rd request 500 and every other 5th 429: 200 and 80 of 600.
    flaky = ("--route", "custom", "--path", "/v1/flaky", "--body", '{"q": {{input}}}')
    report = _bench(app_url, tmp_path, "flaky", "-c", "2", "-n", "600", *flaky)
    assert report["errors"]["by_kind"] == {"HTTP 429": 80, "HTTP 500": 200}
    visit = _open(browser, tmp_path / "flaky.html")[0]
    shown = _figures(visit)
    assert shown["error:HTTP 500"] == "200"
    assert shown["error:HTTP 429"] == "80"
    assert shown["status:200"] == "320"
    assert _number(shown["error_ratio"]) == pytest.approx(280 / 600 * 100, abs=0.05)
    assert visit.charts["errors-by-kind"] == {"HTTP 429": 1, "HTTP 500": 1}
    assert sum(row["errors"] for row in report["timeline"]) == 280
    assert "errors/s" in visit.charts["throughput-over-time"]

    # compare: this run next to a clean one, side by side
    clean = _run_in_process(app_url, "clean")
    write_json(clean, tmp_path / "clean.json")
    page = tmp_path / "compare.html"
    _redline(
        "bench",
        "compare",
        str(tmp_path / "clean.json"),
        str(tmp_path / "flaky.json"),
        "--html",
        str(page),
    )
    visit = _open(browser, page)[0]
    rows = comparison_rows([clean, report])
    for index in (0, 1):
        shown = _figures(visit, str(index))
        for (_title, values, _ratios), metric in zip(rows, COMPARED_METRICS, strict=True):
            value = values[index]
            if value is None:
                assert shown[metric[0]] == "n/a"
            else:
                assert _number(shown[metric[0]]) == pytest.approx(value, rel=0.01, abs=0.001)
        assert shown["error:HTTP 500"] == ("0", "200")[index]
    assert _figures(visit, "1")["throughput"].endswith("x)")  # the ratio to the first run
    charts = visit.charts
    assert set(charts["percentiles"]) == {"clean", "flaky"}
    assert set(charts["latency-over-time"]) == {"clean p50", "clean p99", "flaky p50", "flaky p99"}
    assert set(charts["throughput-over-time"]) == {"clean", "flaky"}
    assert set(charts["errors-by-kind"]) == {"clean", "flaky"}


def test_the_page_check_sees_network_requests_and_console_errors(
    browser: Browser, tmp_path: Path
) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<!doctype html><img src="http://127.0.0.1:9/x.png"><div style="width:900px">wide</div>'
        "<script>no_such_function()</script>"
    )
    visit = browser.visit(page, width=400, screenshot=tmp_path / "bad.png", mobile=True)
    assert "http://127.0.0.1:9/x.png" in visit.requests
    assert any("no_such_function" in error for error in visit.console_errors)
    assert visit.scroll_width > 400


def test_reports_written_before_the_new_timeline_fields_still_render(
    app_url: str, tmp_path: Path
) -> None:
    report = _run_in_process(app_url, "now")
    old = json.loads(json.dumps(report))
    old["label"] = "old"
    for row in old["timeline"]:
        for key in ("seconds", "p90_ms", "max_ms"):
            del row[key]
    page = render_html([old, report])
    assert 'data-chart="throughput-over-time"' in page
    assert 'data-series="old p99"' in page
    single = render_html([old])
    assert 'data-series="p99"' in single
    assert 'data-series="max"' not in single
    with pytest.raises(ValueError, match="render_html needs at least 1 report, got 0"):
        render_html([])


def test_a_run_without_successes_and_a_hostile_label_render_safely() -> None:
    from redline.bench import LoadResult, Workload, build_report

    result = LoadResult(completed=3, elapsed_s=0.2)
    result.errors["connection refused"] = 3
    result.timeline_errors[0] = 3
    label = '<script>alert("x")</script>'
    report = build_report(LoadConfig(url="http://127.0.0.1:1"), Workload(), result, label=label)
    for page in (render_html([report]), render_html([report, report])):
        assert "<script" not in page
        assert "&lt;script&gt;" in page
        assert 'data-figure="error:connection refused">3<' in page
    single = render_html([report])
    assert 'data-chart="percentiles"' in single  # drawn empty: "no data"
    assert "no data" in single
    assert 'data-figure="no-breakdown"' in single
