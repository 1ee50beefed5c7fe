"""Real backends: Redis dying under a tiered cache, and usage rows in PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from redline.serve.database import usage_table
from redline.serve.testing import HashingModel
from tests._services import PostgresServer, RedisServer
from tests.serve._helpers import make_settings, running_app


async def test_requests_survive_redis_dying_and_ready_stays_200(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    cache_url = f"{fresh_redis.url}?tiered=1&namespace=serve-tiered&socket_timeout=0.5"
    model = HashingModel(8)
    async with running_app(make_settings(tmp_path, cache_url=cache_url), model) as (client, _):
        warm = await client.post("/v1/embeddings", json={"input": ["r1", "r2"]})
        assert warm.status_code == 200
        ready = await client.get("/ready")
        assert ready.json()["checks"]["cache"] == "ok"
        fresh_redis.kill()
        for index in range(5):
            response = await client.post("/v1/embeddings", json={"input": ["r1", f"new{index}"]})
            assert response.status_code == 200
            assert len(response.json()["data"]) == 2
        degraded = await client.get("/ready")
        assert degraded.status_code == 200
        assert degraded.json()["checks"]["cache"] == "degraded"
        fresh_redis.start()
        for _ in range(50):
            if (await client.get("/ready")).json()["checks"]["cache"] == "ok":
                break
            await asyncio.sleep(0.2)
        assert (await client.get("/ready")).json()["checks"]["cache"] == "ok"


async def test_plain_redis_cache_down_still_serves(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    cache_url = f"{fresh_redis.url}?namespace=serve-plain&socket_timeout=0.5"
    async with running_app(make_settings(tmp_path, cache_url=cache_url), HashingModel(8)) as (
        client,
        _,
    ):
        fresh_redis.kill()
        response = await client.post("/v1/embeddings", json={"input": "still works"})
        assert response.status_code == 200
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"]["cache"] == "degraded"


@pytest.mark.slow
async def test_usage_rows_are_written_to_postgres(tmp_path: Path, postgres: PostgresServer) -> None:
    dsn = postgres.dsn.replace("postgresql://", "postgresql+asyncpg://")
    settings = make_settings(tmp_path, database_url=dsn)
    async with running_app(settings, HashingModel(8)) as (client, state):
        assert state.database is not None
        assert state.usage is not None
        assert "postgresql+asyncpg" in state.database.url
        before = await state.database.count_usage()
        ids = []
        for texts in (["u1"], ["u1", "u2", "u3"]):
            response = await client.post("/v1/embeddings", json={"input": texts, "user": "me"})
            ids.append(response.headers["x-request-id"])
        await state.usage.flush()
        assert await state.database.count_usage() == before + 2
        async with state.database.engine.connect() as conn:
            rows = (
                await conn.execute(select(usage_table).where(usage_table.c.request_id.in_(ids)))
            ).all()
    by_id = {row.request_id: row for row in rows}
    first, second = by_id[ids[0]], by_id[ids[1]]
    assert (first.inputs, first.cached_inputs, first.model) == (1, 0, "hashing")
    assert (second.inputs, second.cached_inputs, second.tokens) == (3, 1, 3)
    assert second.client == "ip:127.0.0.1"
    assert second.route == "/v1/embeddings"


async def test_usage_is_flushed_to_sqlite_on_shutdown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_app(settings, HashingModel(8)) as (client, _):
        for index in range(3):
            await client.post("/v1/embeddings", json={"input": f"s{index}"})
        database_url = settings.resolved_database_url
    from redline.serve.database import Database

    database = await Database.open(database_url)
    try:
        assert await database.count_usage() == 3
    finally:
        await database.close()


@pytest.mark.parametrize("backend", ["redis", "cluster"])
async def test_embeddings_round_trip_through_redis(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        base = request.getfixturevalue("redis_url")
    else:
        base = request.getfixturevalue("redis_cluster").url
    cache_url = f"{base}?namespace=serve-rt-{tmp_path.name}"
    model = HashingModel(16)
    async with running_app(make_settings(tmp_path, cache_url=cache_url), model) as (client, _):
        first = await client.post("/v1/embeddings", json={"input": ["x1", "x2"]})
        model.inputs.clear()
        second = await client.post("/v1/embeddings", json={"input": ["x2", "x1"]})
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert model.inputs == []
    by_text = {"x1": first.json()["data"][0], "x2": first.json()["data"][1]}
    assert second.json()["data"][0]["embedding"] == by_text["x2"]["embedding"]
    assert second.json()["data"][1]["embedding"] == by_text["x1"]["embedding"]
