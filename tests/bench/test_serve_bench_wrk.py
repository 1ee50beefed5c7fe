"""benchmarks/serve_bench.py's wrk driver: its Lua script against a real server, its parser."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.servebench.wrk import SentenceFile, WrkError, parse_wrk_output, run_wrk

from tests._services import free_port, require_binary, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["first", 'a "quoted" word', "back\\slash and ünïcode", "four", "five"]


@pytest.fixture(scope="module")
def recorder() -> Iterator[str]:
    """Base URL of tests/bench/_recording_app.py under a real uvicorn."""
    require_binary("wrk")
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.bench._recording_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, timeout=30.0, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def received(base: str) -> list[list[str]]:
    with urllib.request.urlopen(f"{base}/received", timeout=10) as response:
        pairs: list[list[str]] = json.loads(response.read())
    request = urllib.request.Request(f"{base}/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).close()
    return pairs


def test_distinct_mode_sends_every_text_once_then_numbered_turns(
    recorder: str, tmp_path: Path
) -> None:
    texts = SentenceFile.write(tmp_path / "texts.jsonl", TEXTS)
    result = run_wrk(f"{recorder}/v1/embeddings", texts, seconds=1, connections=4, model="m1")

    pairs = received(recorder)
    inputs = [text for text, _ in pairs]
    assert result.requests > len(TEXTS)  # it went round the file at least once
    assert result.ok == result.requests <= len(pairs)  # in-flight ones arrive too
    assert result.error_count == 0
    assert len(set(inputs)) == len(inputs)  # every request its own text
    assert {model for _, model in pairs} == {"m1"}
    # Connections interleave, so compare as sets: the file's lines (JSON escaping survived
    # the Lua side), then the same lines again with the turn number appended. wrk builds
    # one request before it connects and never sends it: the first line's first turn.
    assert set(TEXTS[1:]) <= set(inputs)
    assert "first 1" in inputs
    assert set(inputs) <= {f"{text} {turn}" for text in TEXTS for turn in range(1, 10**5)} | set(
        TEXTS
    )
    assert result.rate == pytest.approx(result.ok / result.duration_s)
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    # The next run starts past everything this one could have sent.
    assert texts.cursor >= len(pairs)
    run_wrk(f"{recorder}/v1/embeddings", texts, seconds=1, connections=4, model="m1")
    later = [text for text, _ in received(recorder)]
    assert not set(later) & set(inputs)


def test_repeat_mode_cycles_over_the_file_and_status_errors_are_not_ok(
    recorder: str, tmp_path: Path
) -> None:
    texts = SentenceFile.write(tmp_path / "texts.jsonl", TEXTS)
    result = run_wrk(
        f"{recorder}/v1/embeddings",
        texts,
        seconds=1,
        connections=2,
        mode="repeat",
        model="unavailable",
    )
    inputs = {text for text, _ in received(recorder)}
    assert inputs == set(TEXTS)
    assert result.requests > 0
    assert result.errors["status"] == result.requests  # every answer was a 503
    assert result.ok == 0
    assert result.rate == 0
    assert texts.cursor == 0  # repeat runs leave the distinct cursor alone


def test_parse_reads_the_last_result_line_and_converts_units() -> None:
    line = (
        'WRK_RESULT {"requests":120,"duration_us":2000000,"bytes":9000,'
        '"errors":{"connect":0,"read":1,"write":0,"status":20,"timeout":2},'
        '"latency_us":{"min":900,"mean":1500.5,"max":9000,"p50":1400,"p90":2000,"p99":8000}}'
    )
    result = parse_wrk_output(f"Running 2s test\n  64 connections\n{line}\n", connections=64)
    assert result.requests == 120
    assert result.ok == 100
    assert result.rate == 50.0
    assert result.error_count == 23
    assert result.latency_ms["p50"] == 1.4
    assert result.latency_ms["mean"] == 1.5005
    with pytest.raises(WrkError, match="no WRK_RESULT line"):
        parse_wrk_output("Running 2s test\nsocket errors: connect 64\n")
