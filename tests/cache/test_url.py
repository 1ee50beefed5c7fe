"""cache_from_url: every scheme builds the right cache (without connecting), bad URLs say why."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline.cache.base import Cache
from redline.cache.invalidation import RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.redis_url import SECRET_ENV
from redline.cache.serialization import (
    JsonSerializer,
    MsgpackSerializer,
    SignedPickleSerializer,
)
from redline.cache.tiered import TieredCache
from redline.cache.url import cache_from_url
from redline.exceptions import ConfigError
from tests._services import free_port


@pytest.fixture
async def build() -> AsyncIterator[Callable[..., Cache]]:
    """cache_from_url that closes what it built at the end of the test."""
    built: list[Cache] = []

    def make(url: str, **overrides: Any) -> Cache:
        cache = cache_from_url(url, **overrides)
        built.append(cache)
        return cache

    yield make
    for cache in built:
        await cache.close()


def redis_tier(cache: Cache) -> RedisCache:
    assert isinstance(cache, RedisCache)
    return cache


async def test_memory_url_with_its_parameters(build: Callable[..., Cache]) -> None:
    cache = build("memory://?max_entries=50&max_bytes=4096&ttl=2.5&jitter=0.1&name=l1")
    assert isinstance(cache, MemoryCache)
    assert (cache.max_entries, cache.max_bytes, cache.default_ttl) == (50, 4096, 2.5)
    assert (cache.ttl_jitter, cache.name) == (0.1, "l1")


async def test_memory_url_defaults(build: Callable[..., Cache]) -> None:
    cache = build("memory://")
    assert isinstance(cache, MemoryCache)
    assert (cache.max_entries, cache.max_bytes, cache.default_ttl) == (10_000, 64 * 2**20, None)


async def test_redis_url_builds_a_standalone_cache(build: Callable[..., Cache]) -> None:
    cache = redis_tier(
        build(
            "redis://127.0.0.1:6390/3?namespace=app&ttl=60&jitter=0.2&serializer=msgpack"
            "&max_connections=8&socket_timeout=0.25&socket_connect_timeout=0.125&name=l2"
        )
    )
    assert isinstance(cache.client, Redis)
    assert not cache.is_cluster
    kwargs = cache.client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 3)
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.125)
    assert cache.client.connection_pool.max_connections == 8
    assert (cache.namespace, cache.default_ttl, cache.ttl_jitter, cache.name) == (
        "app",
        60.0,
        0.2,
        "l2",
    )
    assert isinstance(cache.serializer, MsgpackSerializer)


async def test_redis_url_defaults(build: Callable[..., Cache]) -> None:
    cache = redis_tier(build("redis://localhost"))
    assert isinstance(cache.client, Redis)
    kwargs = cache.client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("localhost", 6379, 0)
    assert kwargs["socket_timeout"] == 0.5
    assert cache.client.connection_pool.max_connections == 64
    assert cache.namespace == "redline"
    assert isinstance(cache.serializer, JsonSerializer)


async def test_redis_url_credentials_reach_the_client(build: Callable[..., Cache]) -> None:
    cache = redis_tier(build("redis://user:p%40ss@127.0.0.1:6390/1"))
    kwargs = cache.client.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"]) == ("user", "p@ss")


async def test_rediss_url_uses_tls(build: Callable[..., Cache]) -> None:
    cache = redis_tier(build("rediss://127.0.0.1:6390"))
    assert isinstance(cache.client, Redis)
    assert "SSL" in cache.client.connection_pool.connection_class.__name__


@pytest.mark.parametrize("scheme", ["redis+cluster", "rediss+cluster"])
async def test_cluster_url_builds_a_cluster_cache_over_every_node(
    build: Callable[..., Cache], scheme: str
) -> None:
    cache = redis_tier(build(f"{scheme}://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1?namespace=c"))
    assert isinstance(cache.client, RedisCluster)
    assert cache.is_cluster
    assert cache.namespace == "c"
    startup = sorted(cache.client.nodes_manager.startup_nodes)
    assert startup == ["127.0.0.1:6379", "127.0.0.1:7001", "127.0.0.1:7002"]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6390/2?tiered=1&l1_max_entries=99&l1_ttl=5&channel=inv",
        "tiered+redis://127.0.0.1:6390/2?l1_max_entries=99&l1_ttl=5&channel=inv",
    ],
)
async def test_tiered_url_builds_memory_over_redis_with_invalidation(
    build: Callable[..., Cache], url: str
) -> None:
    cache = build(url)
    assert isinstance(cache, TieredCache)
    assert isinstance(cache.l1, MemoryCache)
    assert cache.l1.max_entries == 99
    assert cache.l1_ttl == 5.0
    assert isinstance(cache.l2, RedisCache)
    assert cache.l2.client.get_connection_kwargs()["db"] == 2
    assert isinstance(cache.invalidation, RedisInvalidation)
    assert cache.invalidation.channel == "inv"
    assert cache.invalidation.nodes == [("127.0.0.1", 6390)]


async def test_tiered_cluster_url_subscribes_through_the_cluster_nodes(
    build: Callable[..., Cache],
) -> None:
    cache = build("tiered+redis+cluster://127.0.0.1:7001,127.0.0.1:7002?invalidation=1")
    assert isinstance(cache, TieredCache)
    assert isinstance(cache.l2, RedisCache)
    assert cache.l2.is_cluster
    assert isinstance(cache.invalidation, RedisInvalidation)
    assert cache.invalidation.nodes == [("127.0.0.1", 7001), ("127.0.0.1", 7002)]


async def test_tiered_without_invalidation(build: Callable[..., Cache]) -> None:
    cache = build("redis://127.0.0.1?tiered=true&invalidation=0")
    assert isinstance(cache, TieredCache)
    assert cache.invalidation is None


async def test_pickle_takes_its_secret_from_the_override_or_the_environment(
    build: Callable[..., Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = redis_tier(build("redis://127.0.0.1?serializer=pickle", secret="k1"))
    assert isinstance(cache.serializer, SignedPickleSerializer)
    monkeypatch.setenv(SECRET_ENV, "from-env")
    cache = redis_tier(build("redis://127.0.0.1?serializer=pickle"))
    assert isinstance(cache.serializer, SignedPickleSerializer)
    assert cache.serializer.loads(SignedPickleSerializer("from-env").dumps({"a": 1})) == {"a": 1}


async def test_overrides_replace_url_parameters(build: Callable[..., Cache]) -> None:
    cache = redis_tier(build("redis://127.0.0.1?namespace=url&ttl=5", namespace="kw", ttl=7))
    assert (cache.namespace, cache.default_ttl) == ("kw", 7.0)


async def test_building_a_cache_does_not_connect(build: Callable[..., Cache]) -> None:
    dead = free_port()
    cache = build(f"tiered+redis://127.0.0.1:{dead}")
    assert isinstance(cache, TieredCache)
    cluster = build(f"redis+cluster://127.0.0.1:{dead}")
    assert isinstance(cluster, RedisCache)


ALLOWED = (
    "memory, redis, rediss, redis+cluster, rediss+cluster, tiered+redis, tiered+rediss, "
    "tiered+redis+cluster, tiered+rediss+cluster"
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1", f"unknown cache URL scheme 'http'; allowed: {ALLOWED}"),
        ("127.0.0.1:6379", f"unknown cache URL scheme '127.0.0.1:6379'; allowed: {ALLOWED}"),
        ("redis:///0", "cache URL has no host: 'redis:///0'"),
        ("redis+cluster://", "cache URL has no host: 'redis+cluster://'"),
        ("redis://:6379", "cache URL has no host: 'redis://:6379'"),
        ("redis://127.0.0.1:abc", "bad port 'abc' in cache URL 'redis://127.0.0.1:abc'"),
        ("redis://127.0.0.1:70000", "bad port '70000' in cache URL"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:x", "bad port 'x' in cache URL"),
        ("redis://127.0.0.1/zero", "database must be a number, got 'zero'"),
        (
            "redis+cluster://127.0.0.1:7000/1",
            "redis+cluster URLs take no database number (Redis Cluster has only db 0), got '/1'",
        ),
        (
            "redis://127.0.0.1:7000,127.0.0.1:7001",
            "several hosts need a redis+cluster:// URL, got redis://",
        ),
        ("redis://127.0.0.1?ttl=soon", "ttl must be a number, got 'soon'"),
        ("redis://127.0.0.1?max_connections=many", "max_connections must be an integer, got"),
        ("memory://?max_entries=1e3", "max_entries must be an integer, got '1e3'"),
        ("redis://127.0.0.1?tiered=maybe", "tiered must be 0/1 or true/false, got 'maybe'"),
        ("redis://127.0.0.1?colour=red", "unknown cache URL parameter 'colour'; allowed: "),
        ("memory://?namespace=x", "unknown cache URL parameter 'namespace'; allowed: jitter, "),
        ("redis://127.0.0.1?ttl=1&ttl=2", "URL parameter 'ttl' is given twice"),
        ("redis://127.0.0.1?serializer=yaml", "serializer must be one of json, msgpack, pickle"),
        (
            "redis://127.0.0.1?serializer=pickle&secret=x",
            f"never put the secret in the URL; pass secret= or set {SECRET_ENV}",
        ),
        (
            "redis://127.0.0.1?serializer=pickle",
            f"serializer=pickle needs a secret: pass secret= or set {SECRET_ENV}",
        ),
        ("redis://127.0.0.1?l1_ttl=5", "parameter 'l1_ttl' only applies with tiered=1"),
        ("memory://somehost", "memory URLs take no host or path: 'memory://somehost'"),
        ("redis://127.0.0.1#frag", "cache URLs take no #fragment"),
    ],
)
def test_bad_urls_are_config_errors_that_say_why(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ConfigError) as raised:
        cache_from_url(url)
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_an_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown cache URL parameter 'max_entires'"):
        cache_from_url("memory://", max_entires=5)


def test_a_non_string_url_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="url must be a str, got bytes"):
        cache_from_url(b"redis://127.0.0.1")  # type: ignore[arg-type]


def test_bad_values_reach_the_cache_constructor_checks() -> None:
    with pytest.raises(ValueError, match=r"ttl_jitter must be in \[0, 1\), got 1.5"):
        cache_from_url("redis://127.0.0.1?jitter=1.5")
