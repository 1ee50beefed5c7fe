"""``/v1/models`` of a real ``redline serve`` while its Redis cache is frozen (SIGSTOP): the
list and the cards answer from what the server knows (its loaded models and upstreams), so
they never call the frozen Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from redline._services.processes import frozen_for
from tests._services import RedisServer
from tests.serve._process import serve_process
from tests.serve.test_frozen_cache import _metric

FREEZE = 3.0

pytestmark = pytest.mark.slow


async def _poll(url: str, stop: asyncio.Event, answers: list[tuple[str, int]]) -> None:
    """One keep-alive client asking for the list and each card in turn until *stop*."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        while not stop.is_set():
            for path in ("/v1/models", "/v1/models/hashing", "/v1/models/nope"):
                response = await client.get(path)
                answers.append((path, response.status_code))


async def test_models_never_call_a_frozen_redis(tmp_path: Path, fresh_redis: RedisServer) -> None:
    assert fresh_redis.proc is not None
    with serve_process(tmp_path, "--cache-url", f"{fresh_redis.url}?namespace=models") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            before = (await client.get("/v1/models/hashing")).json()
            listed = (await client.get("/v1/models")).json()
            assert [card["id"] for card in listed["data"]] == ["hashing"]
            assert listed["data"][0] == before
            answers: list[tuple[str, int]] = []
            stop = asyncio.Event()
            polls = [asyncio.create_task(_poll(url, stop, answers)) for _ in range(2)]
            try:
                await frozen_for(fresh_redis.proc.pid, FREEZE)
            finally:
                stop.set()
                await asyncio.gather(*polls)
            after = (await client.get("/v1/models/hashing")).json()
            metrics = (await client.get("/metrics")).text
    assert set(answers) == {
        ("/v1/models", 200),
        ("/v1/models/hashing", 200),
        ("/v1/models/nope", 404),
    }
    assert after == before
    # nothing touched the cache: the breaker never saw a failed or slow call (the old
    # route's card reads, 0.24-0.29 s each while Redis was frozen, opened it). How long the
    # answers took is measured, not asserted: slowest 0.11 s of ~2,000 on a loaded box.
    assert _metric(metrics, "redis", "state:open") == 0
