"""`redline serve` as a real process: starts fast with the HashingModel, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._services import free_port, stop_process, wait_for_port
from tests.serve._helpers import request_count

REPO = Path(__file__).resolve().parents[2]
HASHING = ("--model", "redline.serve.testing:create_hashing_model")


def _serve(tmp_path: Path, port: int, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """``redline serve`` on *port* with the fast HashingModel."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "REDLINE_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    command = [sys.executable, "-m", "redline", "serve", "--port", str(port), *HASHING, *extra]
    return subprocess.Popen(
        command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = _serve(
        tmp_path,
        port,
        "--max-batch-size",
        "4",
        "--cache-url",
        "none",
        REDLINE_HASHING_DELAY_MS="400",
    )
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


async def _wait_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(300):
            if (await client.get("/ready")).status_code == 200:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("server never became ready")


async def test_sigterm_drains_in_flight_requests(
    slow_server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = slow_server
    await _wait_ready(url)
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        requests = [
            asyncio.create_task(client.post("/v1/embeddings", json={"input": f"drain {i}"}))
            for i in range(12)
        ]
        await asyncio.sleep(0.5)  # every request is on the wire; the first batch is running
        proc.send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * 12
    # uvicorn re-raises the signal once it has shut down cleanly
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "Application shutdown complete" in output


def test_serve_starts_quickly_with_the_hashing_model(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    proc = _serve(tmp_path, port)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        for _ in range(600):
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                break
            time.sleep(0.05)
        response = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "hi"})
        assert response.status_code == 200
        assert len(response.json()["data"][0]["embedding"]) == 384
        assert time.monotonic() - started < 60  # generous: "not blocked forever"
    finally:
        stop_process(proc)
        output = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout is not None:
            proc.stdout.close()
    assert '"route":"/v1/embeddings"' in output  # the JSON access log line


def test_metrics_add_up_across_several_workers(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "metrics").mkdir()
    proc = _serve(
        tmp_path,
        port,
        "--workers",
        "2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout=60, proc=proc)
        ready_in_a_row = 0
        for _ in range(1200):  # every worker loads its own model: wait for a run of 200s
            try:
                ok = httpx.get(f"{url}/ready").status_code == 200
            except httpx.TransportError:
                ok = False
            ready_in_a_row = ready_in_a_row + 1 if ok else 0
            if ready_in_a_row >= 10 or proc.poll() is not None:
                break
            time.sleep(0.05)
        if ready_in_a_row < 10:
            stop_process(proc)
            output = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the server never became ready (exit {proc.returncode}):\n{output}")
        for index in range(10):  # fresh connections: both workers get some
            with httpx.Client(base_url=url) as client:
                assert client.post("/v1/embeddings", json={"input": f"w{index}"}).status_code == 200
        text = httpx.get(f"{url}/metrics").text
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    assert request_count(text, "/v1/embeddings", "200") == 10


def test_several_workers_remove_the_metrics_dir_they_made(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    proc = _serve(
        tmp_path,
        port,
        "--workers",
        "2",
        PROMETHEUS_MULTIPROC_DIR="",  # unset: the server makes its own
        TMPDIR=str(temp),
    )
    try:
        wait_for_port(port, timeout=60, proc=proc)
        made = [p.name for p in temp.iterdir() if p.name.startswith("redline-metrics-")]
        assert len(made) == 1  # the server made its own multiprocess metrics dir
    finally:
        stop_process(proc, timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
    assert not [p for p in temp.iterdir() if p.name.startswith("redline-metrics-")]
