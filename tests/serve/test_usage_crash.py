"""Usage that adds up with real processes: ``redline serve`` SIGKILLed right after N requests
got their 200, then restarted, leaves N usage rows when a Redis (or Cluster) cache is set."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from redline.serve.database import Database
from tests._services import (
    RedisServer,
    free_port,
    stop_process,
    wait_for_port,
)

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 1000
CONCURRENCY = 32


def _serve(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``redline serve`` with the HashingModel, its output in a log file (never a full pipe)."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "REDLINE_DATA_DIR": str(tmp_path / "data"),
        "REDLINE_LOG_LEVEL": "warning",
        **env,
    }
    command = [
        *(sys.executable, "-m", "redline", "serve", "--port", str(port)),
        *("--model", "redline.serve.testing:create_hashing_model"),
    ]
    log = (tmp_path / f"serve-{port}.log").open("ab")
    try:
        return subprocess.Popen(
            command, cwd=tmp_path, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()


async def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(1200):
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}")
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the server never became ready")


async def _send(url: str, count: int) -> int:
    """POST *count* embeddings at CONCURRENCY; how many got 200 (all must)."""
    limits = httpx.Limits(max_connections=CONCURRENCY)
    ok = 0
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        numbers = iter(range(count))

        async def worker() -> None:
            nonlocal ok
            for index in numbers:
                response = await client.post("/v1/embeddings", json={"input": f"crash {index}"})
                assert response.status_code == 200, response.text
                ok += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return ok


async def _rows(database_url: str) -> int:
    database = await Database.open(database_url)
    try:
        return await database.count_usage()
    finally:
        await database.close()


async def _crash_and_restart(
    tmp_path: Path, env: dict[str, str], database_url: str, *, same_port: bool = True
) -> int:
    """N requests, SIGKILL, restart (on the same port: the same stream consumer, or on another
    one: a new consumer that must claim the dead one's entries); the rows 30 s later at most."""
    port = free_port()
    proc = _serve(tmp_path, port, env)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        await _wait_ready(f"http://127.0.0.1:{port}", proc)
        assert await _send(f"http://127.0.0.1:{port}", REQUESTS) == REQUESTS
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop_process(proc)
    if not same_port:
        port = free_port()
    proc = _serve(tmp_path, port, env)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        await _wait_ready(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 30
        rows = await _rows(database_url)
        while rows < REQUESTS and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            rows = await _rows(database_url)
    finally:
        stop_process(proc)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["redis", "tiered-cluster"])
async def test_sigkill_after_n_acknowledged_requests_leaves_n_rows_in_sqlite(
    tmp_path: Path, cache: str, request: pytest.FixtureRequest
) -> None:
    database_url = f"sqlite+aiosqlite:///{(tmp_path / 'data' / 'redline.db').resolve()}"
    if cache == "redis":
        env = {"REDLINE_CACHE_URL": request.getfixturevalue("redis_server").url}
        rows = await _crash_and_restart(tmp_path, env, database_url)
    else:
        env = {
            "REDLINE_CACHE_URL": request.getfixturevalue("redis_cluster").url + "?tiered=1",
            "REDLINE_USAGE_CLAIM_IDLE": "1",
        }
        rows = await _crash_and_restart(tmp_path, env, database_url, same_port=False)
    assert rows == REQUESTS


@pytest.mark.slow
async def test_sigkill_after_n_acknowledged_requests_leaves_n_rows_in_postgres(
    tmp_path: Path, redis_server: RedisServer, fresh_postgres_db: str
) -> None:
    env = {"REDLINE_CACHE_URL": redis_server.url, "REDLINE_DATABASE_URL": fresh_postgres_db}
    assert await _crash_and_restart(tmp_path, env, fresh_postgres_db) == REQUESTS
