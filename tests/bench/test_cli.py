"""`redline bench`: routing of URL vs subcommands, flags, errors (exit 2), SIGINT, compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from redline.bench.metrics_scrape import parse_prometheus
from redline.bench.report import load_report
from redline.cli import build_app

ROOT = Path(__file__).resolve().parents[2]


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


def test_bench_url_routes_to_run(app_url: str, tmp_path: Path) -> None:
    code, out, _err = _invoke(
        app_url, "-n", "50", "-c", "2", "-q", "--json", str(tmp_path / "a.json")
    )
    assert code == 0, out
    assert "throughput" in out
    assert load_report(tmp_path / "a.json")["summary"]["requests"] == 50


def test_bench_run_url_is_the_same_command(app_url: str, tmp_path: Path) -> None:
    code, out, _err = _invoke(
        "run",
        app_url,
        "-n",
        "30",
        "-q",
        "--json",
        str(tmp_path / "b.json"),
        "--plot",
        str(tmp_path / "b.png"),
    )
    assert code == 0, out
    assert load_report(tmp_path / "b.json")["summary"]["requests"] == 30
    assert (tmp_path / "b.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_bench_help_lists_subcommands() -> None:
    code, out, _err = _invoke("--help")
    assert code == 0
    for name in ("run", "compare", "scenario"):
        assert name in out


def test_custom_route_with_header_and_open_loop(app_url: str, tmp_path: Path) -> None:
    code, out, _err = _invoke(
        app_url, "--route", "custom", "--path", "/trivial", "--rate", "50", "-d", "1",
        "-H", "X-Test: 1", "--api-key", "k", "-q", "--json", str(tmp_path / "o.json"),
    )  # fmt: skip
    assert code == 0, out
    report = load_report(tmp_path / "o.json")
    assert report["config"]["mode"] == "open"
    assert report["summary"]["requests"] == 50
    assert "late sends" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-1"], "error: --rate must be > 0 requests per second, got -1.0"),
        (["--repeat", "1.5"], "error: --repeat must be within 0..1, got 1.5"),
        (["-n", "10", "-d", "5"], "error: give --requests or --duration, not both"),
        (["-H", "nocolon"], "error: --header must look like 'Name: value', got 'nocolon'"),
        (["--processes", "0"], "error: --processes must be >= 1, got 0"),
    ],
)
def test_bad_flags_exit_2_with_one_line(app_url: str, args: list[str], message: str) -> None:
    code, _out, err = _invoke(app_url, *args)
    assert code == 2
    assert err.strip() == message


def test_unreachable_url_exits_2_with_one_line(dead_url: str) -> None:
    code, _out, err = _invoke(dead_url, "-n", "5", "-q")
    assert code == 2
    assert err.strip() == f"error: cannot reach {dead_url}: connection refused"


def test_server_errors_are_reported_by_status(app_url: str, tmp_path: Path) -> None:
    code, out, _err = _invoke(
        app_url, "--route", "custom", "--path", "/v1/flaky", "--body", "{}", "-n", "30", "-c", "1",
        "-q", "--json", str(tmp_path / "e.json"),
    )  # fmt: skip
    assert code == 0
    assert "error: HTTP 500" in out
    report = load_report(tmp_path / "e.json")
    assert report["errors"]["by_status"] == {"200": 16, "429": 4, "500": 10}


def test_processes_split_the_load_and_merge(app_url: str, tmp_path: Path) -> None:
    code, out, _err = _invoke(
        app_url,
        "-n",
        "101",
        "-c",
        "4",
        "--processes",
        "2",
        "-q",
        "--json",
        str(tmp_path / "p.json"),
    )
    assert code == 0, out
    report = load_report(tmp_path / "p.json")
    assert report["summary"]["requests"] == 101
    assert report["latency_ms"]["count"] == 101
    assert report["config"]["processes"] == 2


def test_compare_command(app_url: str, tmp_path: Path) -> None:
    for name in ("x", "y"):
        code, _out, _err = _invoke(
            app_url, "-n", "20", "-q", "--label", name, "--json", str(tmp_path / f"{name}.json")
        )
        assert code == 0
    code, out, _err = _invoke("compare", str(tmp_path / "x.json"), str(tmp_path / "y.json"))
    assert code == 0
    assert "throughput" in out
    assert "x" in out
    assert "y" in out
    assert "x)" in out  # a ratio cell like "(1.02x)"


def test_compare_errors_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"schema": "other"}))
    code, _out, err = _invoke("compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"))
    assert code == 2
    assert err.startswith("error: report ")
    code, _out, err = _invoke("compare", str(tmp_path / "a.json"))
    assert code == 2
    assert err.strip() == "error: compare needs at least 2 reports, got 1"


def test_unknown_scenario_exits_2() -> None:
    code, _out, err = _invoke("scenario", "nope")
    assert code == 2
    assert (
        err.strip() == "error: unknown scenario 'nope'; choose one of concurrency, cache, batching"
    )


def _served(app_url: str, metric: str) -> float:
    with urllib.request.urlopen(f"{app_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return parse_prometheus(text)[(metric, ())]


def _wait_for_load(
    app_url: str,
    proc: subprocess.Popen[bytes],
    metric: str = "redline_inference_duration_seconds_count",
    at_least: int = 20,
) -> None:
    """Block until the bench subprocess has sent some requests (its startup time varies)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _served(app_url, metric) >= at_least:
            return
        time.sleep(0.1)
    raise AssertionError(f"bench never loaded the server (exit code {proc.poll()})")


def _bench_process(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "redline", "bench", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_sigint_ends_cleanly_with_a_partial_report(app_url: str, tmp_path: Path) -> None:
    out_json = tmp_path / "partial.json"
    proc = _bench_process(app_url, "-d", "60", "-c", "2", "-q", "--json", str(out_json))
    try:
        _wait_for_load(app_url, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert b"interrupted" in stdout
    report = load_report(out_json)
    assert report["summary"]["interrupted"] is True
    assert report["summary"]["requests"] > 0
    assert report["summary"]["elapsed_s"] < 30


def test_second_sigint_gives_up_at_once(app_url: str, tmp_path: Path) -> None:
    out_json = tmp_path / "never.json"
    args = ["--route", "custom", "--path", "/v1/hang", "-c", "2", "-d", "60", "-q"]
    proc = _bench_process(app_url, *args, "--json", str(out_json))
    try:
        _wait_for_load(app_url, proc, "test_hanging_requests_total", at_least=2)
        # The first SIGINT starts a grace period for the two hanging requests; the second
        # ends it at once.
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2
    assert stderr.decode().strip() == "error: interrupted twice; no report written"
    assert not out_json.exists()


def test_options_before_the_url_also_route_to_run(app_url: str, tmp_path: Path) -> None:
    code, out, _err = _invoke("-n", "10", "-q", app_url, "--json", str(tmp_path / "r.json"))
    assert code == 0, out
    assert load_report(tmp_path / "r.json")["summary"]["requests"] == 10
