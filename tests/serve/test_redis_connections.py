"""Every Redis user (cache, invalidation channel, rate limiter, auth-failure counter, usage
stream) reads a Redis URL the same way and connects with the same timeouts, TLS and
credentials, against real servers (ACL user + requirepass, IPv6 loopback, a frozen server).

Only the public entry points are used, so these tests run unchanged against older code.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AuthenticationError

from redline.cache.invalidation import RedisInvalidation
from redline.cache.redis import RedisCache
from redline.cache.shared_redis import redis_client_for_url
from redline.cache.tiered import TieredCache
from redline.cache.url import cache_from_url
from redline.exceptions import RateLimited
from redline.serve.auth_failures import AuthFailureLimiter
from redline.serve.errors import APIError
from redline.serve.ratelimit import ClientRateLimiter
from redline.serve.resources import _usage_stream
from redline.serve.settings import Settings
from tests._services import HOST, RedisServer

Facts = tuple[Any, ...]


def facts(client: Any) -> Facts:
    """What a client will connect to and how: kind, nodes, TLS, user, password, db, timeouts."""
    assert client is not None, "no Redis client was built"
    kwargs = client.get_connection_kwargs()
    if isinstance(client, RedisCluster):
        nodes = tuple(
            (node.host, node.port) for node in client.nodes_manager.startup_nodes.values()
        )
        tls = issubclass(kwargs.get("connection_class", object), SSLConnection)
        kind, db = "cluster", 0
    else:
        assert isinstance(client, Redis)
        nodes = ((kwargs["host"], kwargs["port"]),)
        tls = issubclass(client.connection_pool.connection_class, SSLConnection)
        kind, db = "standalone", kwargs["db"]
    return (
        kind,
        nodes,
        tls,
        kwargs.get("username"),
        kwargs.get("password"),
        db,
        kwargs.get("socket_timeout"),
        kwargs.get("socket_connect_timeout"),
    )


URLS = [
    "redis://127.0.0.1:6390/3",
    "redis://cache.internal",
    "rediss://app:p%40ss@127.0.0.1:6391/2",
    "redis://:only-password@127.0.0.1:6392",
    "redis://[::1]:6393/1",
    "rediss://[::1]",
    "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    "redis+cluster://app:pw@127.0.0.1:7000,127.0.0.1:7001",
    "rediss+cluster://app:pw@[::1]:7000,[::1]:7001,127.0.0.1:7002",
    "tiered+rediss+cluster://app:pw@127.0.0.1:7000?namespace=x&socket_timeout=0.25",
    "redis://127.0.0.1:6394?socket_timeout=2&socket_connect_timeout=0.75&namespace=n",
]

EXPECTED: dict[str, Facts] = {
    URLS[0]: ("standalone", (("127.0.0.1", 6390),), False, None, None, 3, 0.5, 0.5),
    URLS[1]: ("standalone", (("cache.internal", 6379),), False, None, None, 0, 0.5, 0.5),
    URLS[2]: ("standalone", (("127.0.0.1", 6391),), True, "app", "p@ss", 2, 0.5, 0.5),
    URLS[3]: ("standalone", (("127.0.0.1", 6392),), False, None, "only-password", 0, 0.5, 0.5),
    URLS[4]: ("standalone", (("::1", 6393),), False, None, None, 1, 0.5, 0.5),
    URLS[5]: ("standalone", (("::1", 6379),), True, None, None, 0, 0.5, 0.5),
    URLS[6]: (
        "cluster",
        (("127.0.0.1", 7000), ("127.0.0.1", 7001)),
        False,
        None,
        None,
        0,
        0.5,
        0.5,
    ),
    URLS[7]: (
        "cluster",
        (("127.0.0.1", 7000), ("127.0.0.1", 7001)),
        False,
        "app",
        "pw",
        0,
        0.5,
        0.5,
    ),
    URLS[8]: (
        "cluster",
        (("::1", 7000), ("::1", 7001), ("127.0.0.1", 7002)),
        True,
        "app",
        "pw",
        0,
        0.5,
        0.5,
    ),
    URLS[9]: ("cluster", (("127.0.0.1", 7000),), True, "app", "pw", 0, 0.25, 0.5),
    URLS[10]: ("standalone", (("127.0.0.1", 6394),), False, None, None, 0, 2.0, 0.75),
}


def cache_client(url: str) -> Any:
    cache = cache_from_url(url)
    l2 = cache.l2 if isinstance(cache, TieredCache) else cache
    assert isinstance(l2, RedisCache)
    return l2.client


@pytest.mark.parametrize("url", URLS)
async def test_cache_and_rate_limiter_read_every_url_form_the_same(url: str) -> None:
    cache = cache_client(url)
    limiter = redis_client_for_url(url)
    try:
        assert facts(cache) == EXPECTED[url]
        assert facts(limiter) == EXPECTED[url]
    finally:
        await cache.aclose()
        if limiter is not None:
            await limiter.aclose()


@pytest.mark.parametrize("url", URLS)
async def test_the_invalidation_channel_reads_every_url_form_the_same(url: str) -> None:
    """The channel subscribes on one node at a time, with the URL's TLS and credentials."""
    _kind, nodes, tls, username, password, db, _, _ = EXPECTED[url]
    channel = RedisInvalidation(url)
    assert channel.nodes == list(nodes)
    client = channel._client()
    try:
        assert facts(client)[:6] == ("standalone", nodes[:1], tls, username, password, db)
    finally:
        await client.aclose()


async def test_a_tiered_caches_channel_gets_the_urls_credentials_and_tls() -> None:
    cache = cache_from_url("tiered+rediss+cluster://app:pw@[::1]:7000,127.0.0.1:7001")
    assert isinstance(cache, TieredCache)
    assert isinstance(cache.invalidation, RedisInvalidation)
    client = cache.invalidation._client()
    try:
        assert facts(client)[:5] == ("standalone", (("::1", 7000),), True, "app", "pw")
    finally:
        await client.aclose()
        await cache.close()


def test_a_memory_url_has_no_redis_client() -> None:
    assert redis_client_for_url("memory://?max_entries=5") is None


# -- real servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    """A Redis that refuses anyone without a password: ``default`` needs ``adminpw`` and the
    ACL user ``app`` has ``apppw``."""
    server = RedisServer(
        extra_args=(
            "--requirepass",
            "adminpw",
            "--user",
            "app",
            "on",
            ">apppw",
            "~*",
            "&*",
            "+@all",
        )
    ).start()
    yield server
    server.stop()


async def _wait_connected(channel: RedisInvalidation, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not channel.connected:
        assert time.monotonic() < deadline, f"{channel!r} never subscribed"
        await asyncio.sleep(0.05)


async def _every_user_works(url: str, admin: Redis, tag: str) -> None:
    """Drive each user of *url* and check in Redis (via *admin*) that it really wrote there."""
    settings = Settings(
        cache_url=url,
        rate_limit="1/min",
        usage_queue="redis",
        api_keys=("k-" + "x" * 30,),
        auth_failure_limit="1/min",
    )
    cache = cache_from_url(url)
    assert isinstance(cache, TieredCache)
    assert isinstance(cache.invalidation, RedisInvalidation)
    async with cache:
        await cache.set(f"{tag}:k", {"v": 1})
        assert await admin.exists(f"{tag}:{tag}:k") == 1
        await _wait_connected(cache.invalidation)

        queue, _ = _usage_stream(settings, cache)
        await queue.put(f"{tag}:usage", {"n": 1}, timeout=5.0)
        assert await admin.xlen(settings.resolved_usage_stream) >= 1

    limiter = await ClientRateLimiter.create(settings)
    try:
        await limiter.check(tag)
        with pytest.raises(RateLimited):  # fails open, without raising, if Redis refused it
            await limiter.check(tag)
        assert await admin.exists(f"redline:rl:{tag}") == 1
    finally:
        await limiter.close()

    failures = AuthFailureLimiter.from_settings(settings)
    assert failures is not None
    try:
        await failures.record_failure(tag)
        with pytest.raises(APIError):
            await failures.record_failure(tag)
        assert await admin.exists(f"redline:authfail:{tag}") == 1
    finally:
        await failures.close()


async def test_acl_credentials_reach_every_user_of_the_url(acl_redis: RedisServer) -> None:
    admin = Redis(host=HOST, port=acl_redis.port, password="adminpw")
    try:
        url = f"tiered+redis://app:apppw@{HOST}:{acl_redis.port}/0?namespace=acl"
        await _every_user_works(url, admin, "acl")
    finally:
        await admin.flushall()
        await admin.aclose()


async def test_requirepass_reaches_every_user_of_the_url(acl_redis: RedisServer) -> None:
    admin = Redis(host=HOST, port=acl_redis.port, password="adminpw")
    try:
        url = f"tiered+redis://:adminpw@{HOST}:{acl_redis.port}/0?namespace=pw"
        await _every_user_works(url, admin, "pw")
    finally:
        await admin.flushall()
        await admin.aclose()


async def test_the_acl_server_refuses_a_wrong_password(acl_redis: RedisServer) -> None:
    """The control for the two tests above: without the right password nothing gets in."""
    client = redis_client_for_url(f"redis://app:wrong@{HOST}:{acl_redis.port}")
    assert client is not None
    try:
        with pytest.raises(AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def ipv6_redis() -> Iterator[RedisServer]:
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    server = RedisServer(bind=("::1",)).start()  # no IPv4: only ::1 reaches it
    yield server
    server.stop()


async def test_an_ipv6_literal_host_reaches_every_user(ipv6_redis: RedisServer) -> None:
    admin = Redis(host="::1", port=ipv6_redis.port)
    try:
        url = f"tiered+redis://[::1]:{ipv6_redis.port}/0?namespace=v6"
        await _every_user_works(url, admin, "v6")
    finally:
        await admin.flushall()
        await admin.aclose()


@pytest.fixture
async def frozen_redis(fresh_redis: RedisServer) -> AsyncIterator[RedisServer]:
    """A Redis that accepts connections (the kernel does) but never answers (SIGSTOP)."""
    assert fresh_redis.proc is not None
    fresh_redis.proc.send_signal(signal.SIGSTOP)
    try:
        yield fresh_redis
    finally:
        fresh_redis.proc.send_signal(signal.SIGCONT)


async def test_the_rate_limiter_gives_up_on_a_frozen_redis(frozen_redis: RedisServer) -> None:
    """With the cache's 0.5 s socket timeout and no retry on a timeout, the limiter fails
    open after one timeout (0.6 s measured); redis-py's defaults took 5 s."""
    settings = Settings(cache_url=frozen_redis.url, rate_limit="1/min")
    limiter = await ClientRateLimiter.create(settings)
    try:
        started = time.monotonic()
        await asyncio.wait_for(limiter.check("frozen"), 20.0)
        assert time.monotonic() - started < 3.0
    finally:
        await asyncio.wait_for(limiter.close(), 5.0)
