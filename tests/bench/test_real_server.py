"""The load generator and the server scenarios against a real `redline serve` subprocess."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redline.bench import LoadConfig
from redline.bench.runner import BenchRun, bench
from redline.bench.scenarios import batching_scenario
from redline.bench.server_process import ServerProcess
from redline.bench.workload import Workload
from redline.cli import build_app
from redline.exceptions import BenchError

HASHING = "redline.serve.testing:create_hashing_model"

pytestmark = pytest.mark.slow


@pytest.fixture
async def server() -> AsyncIterator[ServerProcess]:
    async with ServerProcess(model=HASHING, cache_url="memory://") as process:
        yield process


async def test_bench_embeddings_and_predict_against_redline_serve(server: ServerProcess) -> None:
    run = BenchRun(
        config=LoadConfig(url=server.url, concurrency=4, requests=300),
        workload=Workload(repeat=0.9, hot_set_size=4),
    )
    report = await bench(run)
    assert report["summary"]["requests"] == report["summary"]["ok"] == 300
    assert report["config"]["workload"]["model"] == "hashing"  # named by the responses
    assert report["cache"]["hit_ratio"] > 0.6
    memory_tier = report["cache"]["tiers"]["memory"]
    assert memory_tier["hit"] + memory_tier["miss"] >= 300
    assert memory_tier["hit_ratio"] > 0.6
    breakdown = report["breakdown"]
    assert breakdown["source"] == "server-timing"
    assert {"cache", "queue", "inference", "other"} <= set(breakdown["stages_ms"])
    assert breakdown["bottleneck"] in breakdown["stages_ms"]
    histograms = report["server_metrics"]["histograms"]
    assert histograms["redline_http_request_duration_seconds"]["count"] >= 300
    counters = report["server_metrics"]["counters"]
    assert any("/v1/embeddings" in key and 'status="200"' in key for key in counters)

    # the predict route, two inputs a request, on the same server
    predict = BenchRun(
        config=LoadConfig(url=server.url, concurrency=2, requests=40),
        workload=Workload(route="predict", inputs_per_request=2),
    )
    assert (await bench(predict))["summary"]["ok"] == 40


def test_cache_scenario_via_cli_hit_ratio_follows_repeat(tmp_path: Path) -> None:
    args = ["bench", "scenario", "cache", "--model", HASHING, "--duration", "0.5"]
    args += ["--json", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")]
    outcome = CliRunner().invoke(build_app(), args)
    assert outcome.exit_code == 0, outcome.output
    assert "redline bench scenario cache" in outcome.stdout
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["columns"][:2] == ["cache", "repeat"]
    rows = {
        (row[0], row[1]): dict(zip(result["columns"], row, strict=True)) for row in result["rows"]
    }
    assert set(rows) == {(c, r) for c in ("off", "on") for r in (0.0, 0.5, 0.9)}
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in rows.values())
    assert rows[("on", 0.0)]["hit_ratio"] < 0.05
    assert rows[("on", 0.9)]["hit_ratio"] > 0.6
    assert rows[("off", 0.9)]["hit_ratio"] < 0.05


async def test_batching_scenario_runs_both_servers_at_three_concurrencies() -> None:
    result = await batching_scenario(model=HASHING, duration=0.5)
    assert [(row[0], row[1]) for row in result["rows"]] == [
        ("off", 1), ("off", 8), ("off", 64), ("on", 1), ("on", 8), ("on", 64),
    ]  # fmt: skip
    assert result["columns"][2:] == [
        "rps", "p50_ms", "p99_ms", "bottleneck", "errors", "error_kinds",
    ]  # fmt: skip
    assert all(row[2] > 0 and row[-2] == 0 and row[-1] == "" for row in result["rows"])
    # the server sends Server-Timing, so every cell names its slowest stage
    assert all(row[5] in {"cache", "queue", "inference", "other"} for row in result["rows"])


async def test_server_that_exits_at_start_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match=r"^redline serve exited with 2: .*MAX_BATCH_SIZE"):
        async with ServerProcess(model=HASHING, max_batch_size=0):
            pass


async def test_server_that_never_gets_ready_is_a_bench_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A model whose warm-up outlasts the wait leaves the server up but not ready.
    monkeypatch.setenv("REDLINE_HASHING_DELAY_MS", "6000")
    with pytest.raises(
        BenchError, match=r"^redline serve on http://127.0.0.1:\d+ not ready after 3s$"
    ):
        async with ServerProcess(model=HASHING, ready_timeout=3.0):
            pass


async def test_server_that_cannot_load_its_model_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match=r"cannot find module 'redline.no_such_module'"):
        async with ServerProcess(model="redline.no_such_module:factory", ready_timeout=30.0):
            pass
