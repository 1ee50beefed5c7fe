"""One server process sends every Redis user of ``cache_url`` (the cache, the per-client rate
limiter, the auth-failure counter) through one client and one breaker per node: one
connection pool for all, and a frozen Redis given up on once, not once per user.

The first two tests drive only public entry points, so they also run against the code
before :class:`~redline.cache.shared_redis.SharedRedis` (where they fail: 3 connections,
and a cache read that waited out its own stall bound after the limiter's breaker opened).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis

from redline.cache.breaker import BreakerState
from redline.cache.memory import MemoryCache
from redline.cache.shared_redis import SharedRedis
from redline.exceptions import CacheUnavailable
from redline.serve.app import create_app
from redline.serve.errors import APIError
from redline.serve.state import ServerState
from redline.serve.testing import HashingModel
from tests._services import HOST, RedisServer
from tests.serve._helpers import make_settings

ADDRESS = "198.51.100.7"


@asynccontextmanager
async def _server(tmp_path: Path, redis: RedisServer) -> AsyncIterator[FastAPI]:
    """An app on *redis* with a rate limit and an auth-failure budget, its lifespan running."""
    settings = make_settings(
        tmp_path,
        cache_url=f"{redis.url}?namespace=shared",
        rate_limit="1000/min",
        api_keys="right",
        auth_failure_limit="5/min",
    )
    app = create_app(settings, model=HashingModel(8))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        state: ServerState = app.state.redline
        await state.wait_ready(timeout=60)
        yield app


async def _use_every_user(app: FastAPI, client: str) -> None:
    """One call of each Redis user, one after the other."""
    state: ServerState = app.state.redline
    assert state.limiter is not None
    assert state.cache is not None
    await state.limiter.check(client)
    await app.state.auth_failures.record_failure(ADDRESS)
    await state.cache.set(client, 1)
    assert await state.cache.get(client) == 1


async def test_every_redis_user_of_a_server_shares_one_connection(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    admin = Redis(host=HOST, port=fresh_redis.port)
    try:
        async with _server(tmp_path, fresh_redis) as app:
            await _use_every_user(app, "a")
            await _use_every_user(app, "b")
            own = await admin.client_id()
            # The usage stream's blocking read holds a connection of the cache's pool of its
            # own; every call above, one after the other, needs one connection in all.
            others = [
                c
                for c in await admin.client_list()
                if int(c["id"]) != own and c["cmd"] != "xreadgroup"
            ]
            # Before: the cache, the limiter and the counter each had a pool (3 connections).
            assert len(others) == 1, [(c["id"], c["cmd"], c["age"]) for c in others]
    finally:
        await admin.aclose()


async def test_a_frozen_redis_is_given_up_on_once_for_the_whole_server(
    tmp_path: Path, fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with _server(tmp_path, fresh_redis) as app:
        state: ServerState = app.state.redline
        assert state.limiter is not None
        assert state.cache is not None
        await _use_every_user(app, "warm")
        caplog.set_level(logging.WARNING, logger="redline")
        assert fresh_redis.proc is not None
        fresh_redis.proc.send_signal(signal.SIGSTOP)
        try:
            # The limiter's checks find Redis silent and open the breaker (stall bound) ...
            checks = (state.limiter.check(f"client{i}") for i in range(20))
            await asyncio.wait_for(asyncio.gather(*checks), 5)
            # ... which is the cache's: its next read fails at once, with no wait of its own
            # (before, its own breaker was closed and the read sat out its stall bound).
            with pytest.raises(CacheUnavailable, match="is open"):
                await asyncio.wait_for(state.cache.get("warm"), 5)
            # ... and the auth-failure counter's: counted in process at once.
            refused = 0
            for _ in range(10):
                try:
                    await asyncio.wait_for(app.state.auth_failures.record_failure(ADDRESS), 5)
                except APIError:
                    refused += 1
            assert refused == 5  # counted in process: a fresh budget of 5, then refused
        finally:
            fresh_redis.proc.send_signal(signal.SIGCONT)
        opened = [r for r in caplog.records if re.match(r"[^:]* is open\b", r.getMessage())]
        assert len(opened) == 1, [r.getMessage() for r in opened]

        shared = SharedRedis.of_cache(state.cache)
        assert shared is not None
        assert not shared.owns_client
        breaker = shared.breaker_for("redline:rl:client0")
        assert breaker is shared.breaker_for("redline:authfail:" + ADDRESS)
        assert breaker.state is BreakerState.OPEN


async def test_a_memory_cache_lends_no_redis() -> None:
    assert SharedRedis.of_cache(MemoryCache()) is None
    assert SharedRedis.of_cache(None) is None
    assert SharedRedis.from_url("memory://") is None


async def test_a_redis_of_its_own_is_closed_by_its_user_a_borrowed_one_is_not(
    fresh_redis: RedisServer,
) -> None:
    own = SharedRedis.from_url(fresh_redis.url)
    assert own is not None
    assert own.owns_client
    await own.client.ping()
    await own.aclose()
    from redline.cache.redis import RedisCache

    cache = RedisCache.from_url(fresh_redis.url)
    borrowed = SharedRedis.of_cache(cache)
    assert borrowed is not None
    assert borrowed.client is cache.client
    await borrowed.aclose()
    assert await cache.client.ping()  # still open: the cache closes it
    await cache.close()
