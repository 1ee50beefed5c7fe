"""Real services for the whole session, each started on free loopback ports and stopped after."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests._services import PostgresServer, RedisClusterServers, RedisServer, require_binary

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone Redis for the whole session (flush what you use, or use unique keys)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A private Redis for one test: it may kill and restart it (``.kill()``, ``.start()``)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A real 6-node Redis Cluster (3 masters + 3 replicas); ``.url`` is ``redis+cluster://...``."""
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server; ``.dsn`` is ``postgresql://postgres@127.0.0.1:PORT/redline``."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """Path of the nginx binary (installed by `make test`)."""
    return require_binary("nginx")
