"""The ``cache`` fixture: every backend of the contract suite, each test in its own namespace."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from redline.cache.base import Cache
from redline.cache.invalidation import RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.tiered import TieredCache
from tests._services import RedisClusterServers


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A raw redis-py client on the session Redis (for the lock, Bloom and stream tests)."""
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    """A raw redis-py client on the session Redis Cluster."""
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.startup_nodes]
    )
    yield cluster
    await cluster.aclose()


BACKENDS = ["memory", "redis", "cluster", "tiered", "tiered-cluster"]


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or other engineer's run on the same server) uses."""
    return f"t{uuid.uuid4().hex[:12]}"


async def make_tiered(
    l2: RedisCache, target: str | list[tuple[str, int]], namespace: str
) -> TieredCache:
    """A started memory+Redis TieredCache whose invalidation link is up."""
    invalidation = RedisInvalidation(target, channel=f"{namespace}:invalidate")
    tiered = TieredCache(MemoryCache(), l2, invalidation=invalidation)
    await tiered.start()
    deadline = time.monotonic() + 15
    while not invalidation.connected:
        if time.monotonic() > deadline:
            raise TimeoutError("the invalidation channel did not connect within 15 s")
        await asyncio.sleep(0.02)
    return tiered


@pytest.fixture(params=BACKENDS)
async def cache(
    request: pytest.FixtureRequest, namespace: str, redis_url: str
) -> AsyncIterator[Cache]:
    """One cache per backend: memory, Redis, Redis Cluster, and memory+Redis tiered caches."""
    kind: str = request.param
    built: Cache
    if kind == "memory":
        built = MemoryCache()
    elif kind in ("redis", "tiered"):
        redis = RedisCache.from_url(redis_url, namespace=namespace)
        built = redis if kind == "redis" else await make_tiered(redis, redis_url, namespace)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        redis = RedisCache.from_cluster_nodes(cluster.startup_nodes, namespace=namespace)
        built = (
            redis
            if kind == "cluster"
            else await make_tiered(redis, cluster.startup_nodes, namespace)
        )
    try:
        yield built
    finally:
        await built.clear()
        await built.close()
