"""parse_redis_url / redis_client: one description of a Redis target, one way to connect."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline.cache.redis import RedisCache
from redline.cache.redis_url import RedisTarget, node_client, parse_redis_url, redis_client
from redline.exceptions import ConfigError


def test_a_standalone_url_with_everything() -> None:
    target = parse_redis_url(
        "rediss://app:p%40ss%3Aw@cache.internal:6390/3"
        "?socket_timeout=2&socket_connect_timeout=0.25&max_connections=8&namespace=x&ttl=5"
    )
    assert target == RedisTarget(
        nodes=(("cache.internal", 6390),),
        tls=True,
        username="app",
        password="p@ss:w",
        db=3,
        socket_timeout=2.0,
        socket_connect_timeout=0.25,
        max_connections=8,
        options={"namespace": "x", "ttl": 5.0},
    )
    assert "p@ss" not in repr(target)
    assert target.display() == "rediss://app:***@cache.internal:6390/3"


@pytest.mark.parametrize(
    ("url", "nodes", "cluster", "tls", "tiered"),
    [
        ("redis://h", (("h", 6379),), False, False, False),
        ("REDIS://h:1", (("h", 1),), False, False, False),
        ("redis://[::1]", (("::1", 6379),), False, False, False),
        ("redis://[::1]:7000/0", (("::1", 7000),), False, False, False),
        ("rediss://[fe80::1%25lo]:7000", (("fe80::1%25lo", 7000),), False, True, False),
        ("redis+cluster://a:1,b:2", (("a", 1), ("b", 2)), True, False, False),
        ("rediss+cluster://[::1]:1,[::1]:2/", (("::1", 1), ("::1", 2)), True, True, False),
        ("tiered+redis://h", (("h", 6379),), False, False, True),
        ("tiered+rediss+cluster://h:1", (("h", 1),), True, True, True),
        ("redis://h?tiered=1", (("h", 6379),), False, False, True),
    ],
)
def test_every_scheme_and_host_form(
    url: str, nodes: tuple[tuple[str, int], ...], cluster: bool, tls: bool, tiered: bool
) -> None:
    target = parse_redis_url(url)
    assert (target.nodes, target.cluster, target.tls, target.tiered) == (
        nodes,
        cluster,
        tls,
        tiered,
    )


def test_credential_forms() -> None:
    assert parse_redis_url("redis://u:p@h").username == "u"
    assert parse_redis_url("redis://:p@h").username is None
    assert parse_redis_url("redis://:p@h").password == "p"
    assert parse_redis_url("redis+cluster://u:p@a:1,b:2").password == "p"
    assert parse_redis_url("redis://h").password is None


def test_overrides_replace_query_options() -> None:
    target = parse_redis_url("redis://h?socket_timeout=2", socket_timeout=3, namespace="n")
    assert (target.socket_timeout, target.options) == (3.0, {"namespace": "n"})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "unknown cache URL scheme 'http'"),
        ("unix:///tmp/redis.sock", "unknown cache URL scheme 'unix'"),
        ("h:6379", "unknown cache URL scheme 'h:6379'"),
        ("redis://", "cache URL has no host: 'redis://'"),
        ("redis://u:p@", "cache URL has no host"),
        ("redis://h:0", "bad port '0'"),
        ("redis://h:99999", "bad port '99999'"),
        ("redis://h:port", "bad port 'port'"),
        ("redis://::1:6379", "IPv6 hosts need brackets"),
        ("redis://[::1:6379", "malformed cache URL 'redis://[::1:6379': Invalid IPv6 URL"),
        ("redis://[]:1", "malformed cache URL 'redis://[]:1'"),
        ("redis://[::1]x", "expected :port after [::1]"),
        ("redis://h/db1", "database must be a number, got 'db1'"),
        ("redis+cluster://h:1/2", "redis+cluster URLs take no database number"),
        ("redis://a:1,b:2", "several hosts need a redis+cluster:// URL"),
        ("redis+cluster://a:1,,b:2", "cache URL has no host"),
        ("redis://h#x", "cache URLs take no #fragment"),
        ("redis://h?socket_timeout=0", "socket_timeout must be > 0, got '0'"),
        ("redis://h?socket_connect_timeout=x", "socket_connect_timeout must be a number"),
        ("redis://h?max_connections=0", "max_connections must be >= 1, got '0'"),
        ("redis://h?colour=red", "unknown cache URL parameter 'colour'"),
        ("redis://h?secret=x", "never put the secret in the URL"),
        ("redis://h?ttl=1&ttl=2", "URL parameter 'ttl' is given twice"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_redis_url(url)
    assert message in str(raised.value)


def test_a_target_checks_itself() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        RedisTarget(())
    with pytest.raises(ConfigError, match="several nodes need cluster=True"):
        RedisTarget((("a", 1), ("b", 2)))
    with pytest.raises(ConfigError, match="only database 0"):
        RedisTarget((("a", 1),), cluster=True, db=1)
    with pytest.raises(ConfigError, match="bad Redis node"):
        RedisTarget((("a", 70000),))


async def test_the_factory_builds_retry_free_clusters_and_one_retry_standalone() -> None:
    cluster = redis_client(parse_redis_url("rediss+cluster://u:p@[::1]:7000,h:7001"))
    standalone = redis_client(parse_redis_url("redis://u:p@[::1]:7000/2?socket_timeout=2"))
    try:
        assert isinstance(cluster, RedisCluster)
        assert cluster.retry is not None
        assert cluster.retry.get_retries() == 0
        kwargs = cluster.get_connection_kwargs()
        assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (
            "u",
            "p",
            0.5,
        )
        assert isinstance(standalone, Redis)
        kwargs = standalone.get_connection_kwargs()
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("::1", 7000, 2)
        assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == (
            "u",
            "p",
            2.0,
        )
        assert kwargs["retry"].get_retries() == 1
        assert not kwargs["decode_responses"]
    finally:
        await cluster.aclose()
        await standalone.aclose()


async def test_a_node_client_of_a_cluster_target_is_standalone_with_its_credentials() -> None:
    target = parse_redis_url("rediss+cluster://u:p@a:1,b:2")
    client = node_client(target, ("b", 2), socket_timeout=3.0, retries=0)
    try:
        kwargs = client.get_connection_kwargs()
        assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("b", 2, "p")
        assert (kwargs["socket_timeout"], kwargs["retry"].get_retries()) == (3.0, 0)
    finally:
        await client.aclose()


async def test_redis_cache_from_url_takes_every_redis_url_and_only_connection_options() -> None:
    cache = RedisCache.from_url("redis+cluster://u:p@[::1]:7000,h:7001", socket_timeout=1.0)
    try:
        assert cache.is_cluster
        assert cache.client.get_connection_kwargs()["socket_timeout"] == 1.0
    finally:
        await cache.close()
    cache = RedisCache.from_url("redis://h?socket_timeout=2")
    try:
        assert cache.client.get_connection_kwargs()["socket_timeout"] == 2.0
    finally:
        await cache.close()
    with pytest.raises(ConfigError, match="only connection options, got 'namespace'"):
        RedisCache.from_url("redis://h?namespace=x")
