"""RedisCache against real Redis and a real Redis Cluster: coalescing, Cluster fan-out,
hostile stored values, outages (breaker open, L1 keeps serving, recovery), error mapping."""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from redline.cache._redis_connection import BreakerAwareConnection
from redline.cache.base import MISSING
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache, translate_redis_error
from redline.cache.serialization import SignedPickleSerializer
from redline.cache.tiered import TieredCache
from redline.exceptions import CacheError, CacheUnavailable
from tests._services import RedisClusterServers, RedisServer, free_port


def info_field(server: RedisServer, section: str, field: str) -> int:
    for line in server.cli("info", section).splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1].split(",")[0].removeprefix("calls="))
    return 0


def command_calls(server: RedisServer, command: str) -> int:
    """How many times *server* ran *command* (``INFO commandstats``)."""
    return info_field(server, "commandstats", f"cmdstat_{command}")


@pytest.fixture
async def fresh_cache(fresh_redis: RedisServer, namespace: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_url(
        fresh_redis.url,
        namespace=namespace,
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout=0.3, name="redis"),
    )
    yield cache
    await cache.close()


@pytest.fixture
async def redis_cache(redis_url: str, namespace: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_url(redis_url, namespace=namespace)
    yield cache
    await cache.clear()
    await cache.close()


@pytest.fixture
async def cluster_cache(
    redis_cluster: RedisClusterServers, namespace: str
) -> AsyncIterator[RedisCache]:
    cache = RedisCache.from_cluster_nodes(redis_cluster.startup_nodes, namespace=namespace)
    yield cache
    await cache.clear()
    await cache.close()


def masters(cluster: RedisClusterServers) -> list[RedisServer]:
    return [node for node in cluster.nodes if node.cli("role").splitlines()[0] == "master"]


def keys_on(node: RedisServer, pattern: str) -> list[str]:
    return node.cli("--scan", "--pattern", pattern).split()


# -- coalescing ---------------------------------------------------------------------------


async def test_concurrent_gets_are_one_mget_round_trip(
    fresh_cache: RedisCache, fresh_redis: RedisServer
) -> None:
    await fresh_cache.set_many({f"k{i}": i for i in range(100)})
    mgets, gets = command_calls(fresh_redis, "mget"), command_calls(fresh_redis, "get")
    batches = fresh_cache.coalesced_batches
    values = await asyncio.gather(*(fresh_cache.get(f"k{i}") for i in range(100)))
    assert values == list(range(100))
    assert fresh_cache.coalesced_batches == batches + 1
    assert command_calls(fresh_redis, "mget") == mgets + 1
    assert command_calls(fresh_redis, "get") == gets


async def test_duplicate_keys_in_one_batch_share_one_lookup(
    fresh_cache: RedisCache, fresh_redis: RedisServer
) -> None:
    await fresh_cache.set("hot", {"v": 1})
    hits = info_field(fresh_redis, "stats", "keyspace_hits")
    values = await asyncio.gather(*(fresh_cache.get("hot") for _ in range(50)))
    assert values == [{"v": 1}] * 50
    assert values[0] is not values[1]  # each caller decodes its own copy
    assert info_field(fresh_redis, "stats", "keyspace_hits") == hits + 1
    assert fresh_cache.stats().hits == 50


async def test_get_with_ttl_returns_the_remaining_ttl_in_the_same_batch(
    fresh_cache: RedisCache, fresh_redis: RedisServer
) -> None:
    await fresh_cache.set("a", "x", ttl=30)
    await fresh_cache.set("b", "y")
    batches = fresh_cache.coalesced_batches
    (value_a, ttl_a), (value_b, ttl_b), plain, missing = await asyncio.gather(
        fresh_cache.get_with_ttl("a"),
        fresh_cache.get_with_ttl("b"),
        fresh_cache.get("a"),
        fresh_cache.get_with_ttl("absent", "dflt"),
    )
    assert (value_a, value_b, plain) == ("x", "y", "x")
    assert ttl_a is not None
    assert 25 < ttl_a <= 30
    assert ttl_b is None
    assert missing == ("dflt", None)
    assert fresh_cache.coalesced_batches == batches + 1


async def test_a_cancelled_get_does_not_disturb_the_rest_of_its_batch(
    fresh_cache: RedisCache,
) -> None:
    await fresh_cache.set("k", 1)
    doomed = asyncio.ensure_future(fresh_cache.get("k"))
    others = [asyncio.ensure_future(fresh_cache.get("k")) for _ in range(5)]
    await asyncio.sleep(0)
    doomed.cancel()
    assert await asyncio.gather(*others) == [1] * 5
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_cluster_gets_are_one_pipeline_per_master(
    cluster_cache: RedisCache, redis_cluster: RedisClusterServers
) -> None:
    await cluster_cache.set_many({f"k{i}": i for i in range(60)})
    primaries = masters(redis_cluster)
    before = [command_calls(node, "get") for node in primaries]
    batches = cluster_cache.coalesced_batches
    values = await asyncio.gather(*(cluster_cache.get(f"k{i % 60}") for i in range(120)))
    assert values == [i % 60 for i in range(120)]
    assert cluster_cache.coalesced_batches == batches + 1
    served = [
        command_calls(node, "get") - calls for node, calls in zip(primaries, before, strict=True)
    ]
    assert sum(served) == 60  # each distinct key once, duplicates shared
    assert all(served), "each master answers for its own slots"


async def test_a_failed_batch_fails_every_waiter_and_counts_once(
    fresh_cache: RedisCache, fresh_redis: RedisServer
) -> None:
    await fresh_cache.set("k", 1)
    fresh_redis.kill()
    results = await asyncio.gather(
        *(fresh_cache.get(f"k{i}") for i in range(10)), return_exceptions=True
    )
    assert all(isinstance(result, CacheUnavailable) for result in results)
    assert fresh_cache.breaker.stats().consecutive_failures == 1
    assert fresh_cache.stats().errors == 1


async def test_more_concurrent_commands_than_connections_wait_their_turn(
    redis_url: str, namespace: str
) -> None:
    async with RedisCache.from_url(redis_url, namespace=namespace, max_connections=4) as cache:
        await asyncio.gather(*(cache.set(f"k{i}", i) for i in range(300)))
        assert await cache.get_many([f"k{i}" for i in range(300)]) == {
            f"k{i}": i for i in range(300)
        }
        await cache.clear()


# -- Cluster fan-out ----------------------------------------------------------------------


async def test_delete_pattern_and_clear_reach_every_cluster_master(
    cluster_cache: RedisCache, redis_cluster: RedisClusterServers, namespace: str
) -> None:
    await cluster_cache.set_many({f"user:{i}": i for i in range(90)})
    await cluster_cache.set("keep:1", 1, tags=["t"])
    primaries = masters(redis_cluster)
    assert len(primaries) == 3
    before = [keys_on(node, f"{namespace}:user:*") for node in primaries]
    assert all(before), "every master should hold some of the 90 keys"
    assert sum(map(len, before)) == 90

    assert await cluster_cache.delete_pattern("user:*") == 90
    assert [keys_on(node, f"{namespace}:user:*") for node in primaries] == [[], [], []]
    assert await cluster_cache.get("keep:1") == 1

    await cluster_cache.clear()
    assert sum(len(keys_on(node, f"{namespace}*")) for node in primaries) == 0


async def test_cluster_tags_and_multi_key_calls_span_slots(cluster_cache: RedisCache) -> None:
    keys = [f"item:{i}" for i in range(40)]
    assert isinstance(cluster_cache.client, RedisCluster)
    slots = {cluster_cache.client.keyslot(cluster_cache.full_key(key)) for key in keys}
    assert len(slots) > 10
    for key in keys:
        await cluster_cache.set(key, key, tags=["all"])
    assert await cluster_cache.get_many(keys) == {key: key for key in keys}
    assert await cluster_cache.invalidate_tags("all") == 40
    assert await cluster_cache.get_many(keys) == {}
    assert await cluster_cache.client.exists(cluster_cache.tag_key("all")) == 0


async def test_a_tag_set_lives_as_long_as_its_longest_lived_member(
    redis_cache: RedisCache,
) -> None:
    assert redis_cache.default_ttl is None
    record = redis_cache.tag_key("t")
    await redis_cache.set("short", 1, ttl=5, tags=["t"])
    assert 0 < await redis_cache.client.pttl(record) <= 5_000
    await redis_cache.set("long", 2, ttl=100, tags=["t"])
    assert 5_000 < await redis_cache.client.pttl(record) <= 100_000
    await redis_cache.set("short again", 3, ttl=5, tags=["t"])  # never shortened
    assert 5_000 < await redis_cache.client.pttl(record) <= 100_000
    await redis_cache.set("forever", 4, tags=["t"])  # no TTL: nor has the record
    assert await redis_cache.client.pttl(record) == -1
    await redis_cache.set("short once more", 5, ttl=5, tags=["t"])
    assert await redis_cache.client.pttl(record) == -1
    assert await redis_cache.invalidate_tags("t") == 5
    assert await redis_cache.client.exists(record) == 0


async def test_a_tag_set_expires_with_its_members(redis_cache: RedisCache) -> None:
    await redis_cache.set("a", 1, ttl=0.2, tags=["gone", "also"])
    await redis_cache.set("b", 2, ttl=0.3, tags=["gone"])
    records = [redis_cache.tag_key("gone"), redis_cache.tag_key("also")]
    assert await redis_cache.client.exists(*records) == 2
    await asyncio.sleep(0.5)
    assert await redis_cache.client.exists(*records) == 0  # no names of expired keys left
    assert await redis_cache.get_many(["a", "b"]) == {}


# -- stored values ------------------------------------------------------------------------


async def test_ints_are_stored_as_plain_decimal_and_bools_are_not_ints(
    redis_cache: RedisCache,
) -> None:
    await redis_cache.set("n", 12)
    await redis_cache.set("flag", True)
    assert await redis_cache.client.get(redis_cache.full_key("n")) == b"12"
    assert await redis_cache.get("flag") is True
    assert await redis_cache.client.incrby(redis_cache.full_key("n"), 3) == 15
    assert await redis_cache.get("n") == 15


async def test_garbage_in_redis_is_a_logged_and_counted_miss(
    redis_cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    await redis_cache.client.set(redis_cache.full_key("junk"), b"\xff\x00not a value")
    await redis_cache.client.set(redis_cache.full_key("header-only"), b"j")
    with caplog.at_level(logging.WARNING, logger="redline.cache.redis"):
        assert await redis_cache.get("junk", "dflt") == "dflt"
        assert await redis_cache.get_many(["junk", "header-only"]) == {}
        assert await redis_cache.get_with_ttl("header-only") == (MISSING, None)
    assert redis_cache.stats().errors == 4
    assert "undecodable value at 'junk'" in caplog.text


class _Exploit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.path,))


async def test_a_forged_pickle_is_never_unpickled(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    honest = SignedPickleSerializer("the real secret")
    forger = SignedPickleSerializer("a guessed secret")
    async with RedisCache.from_url(redis_url, namespace=namespace, serializer=honest) as cache:
        await cache.set("ok", {"a": 1})
        await cache.client.set(cache.full_key("forged"), forger.dumps(_Exploit(marker)))
        unsigned = b"p" + b"\x00" * 32 + pickle.dumps(_Exploit(marker))
        await cache.client.set(cache.full_key("unsigned"), unsigned)
        assert await cache.get("ok") == {"a": 1}
        assert await cache.get("forged") is MISSING
        assert await cache.get("unsigned") is MISSING
        assert cache.stats().errors == 2
        await cache.clear()
    assert not marker.exists()


async def test_ttl_jitter_shortens_ttls_by_up_to_the_fraction(
    redis_url: str, namespace: str
) -> None:
    async with RedisCache.from_url(redis_url, namespace=namespace, ttl_jitter=0.5) as cache:
        await cache.set_many({f"k{i}": i for i in range(40)}, ttl=100)
        ttls = [await cache.ttl(f"k{i}") for i in range(40)]
        await cache.clear()
    assert all(t is not None and 49 <= t <= 100 for t in ttls)
    assert len({round(t or 0) for t in ttls}) > 5


async def test_default_ttl_applies_when_set_gets_none(redis_url: str, namespace: str) -> None:
    async with RedisCache.from_url(redis_url, namespace=namespace, default_ttl=50) as cache:
        await cache.set("k", 1)
        remaining = await cache.ttl("k")
        await cache.clear()
    assert remaining is not None
    assert 45 < remaining <= 50


# -- outages ------------------------------------------------------------------------------


async def test_breaker_opens_when_redis_dies_and_closes_after_it_comes_back(
    fresh_cache: RedisCache, fresh_redis: RedisServer
) -> None:
    await fresh_cache.set("k", "v")
    fresh_redis.kill()
    for _ in range(3):
        with pytest.raises(CacheUnavailable, match="redis unavailable during"):
            await fresh_cache.get("k")
    assert fresh_cache.breaker.state is BreakerState.OPEN
    assert (await fresh_cache.health())["status"] == "down"
    rejected = fresh_cache.breaker.stats().rejected
    with pytest.raises(CacheUnavailable, match="circuit breaker 'redis' is open"):
        await fresh_cache.set("k", "w")
    with pytest.raises(CacheUnavailable, match="circuit breaker 'redis' is open"):
        await fresh_cache.get("k")
    assert fresh_cache.breaker.stats().rejected >= rejected + 2
    errors = fresh_cache.stats().errors
    assert errors >= 3

    fresh_redis.start()  # an empty Redis on the same port
    await asyncio.sleep(0.4)  # past reset_timeout: the next call is the half-open probe
    deadline = time.monotonic() + 20
    while True:
        try:
            await fresh_cache.set("k", "back")
            break
        except CacheUnavailable:
            assert time.monotonic() < deadline, "the breaker never closed again"
            await asyncio.sleep(0.35)
    assert fresh_cache.breaker.state is BreakerState.CLOSED
    assert await fresh_cache.get("k") == "back"
    assert (await fresh_cache.health())["status"] == "ok"
    assert fresh_cache.breaker.stats().opened_count >= 1


async def test_tiered_reads_keep_working_from_l1_while_redis_is_down(
    fresh_redis: RedisServer, namespace: str
) -> None:
    l2 = RedisCache.from_url(
        fresh_redis.url,
        namespace=namespace,
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=0.3),
    )
    async with TieredCache(MemoryCache(), l2) as cache:
        await cache.set("profile", {"name": "Ada"}, ttl=60)
        fresh_redis.kill()
        for _ in range(5):
            assert await cache.get("profile") == {"name": "Ada"}
        await cache.set("later", 2)  # L2 write fails; L1 still takes it
        assert await cache.get("later") == 2
        assert await cache.get("never-set") is MISSING
        assert l2.breaker.state is BreakerState.OPEN
        assert (await cache.health())["status"] == "degraded"
        fresh_redis.start()
        await asyncio.sleep(0.4)
        deadline = time.monotonic() + 20
        while l2.breaker.state is not BreakerState.CLOSED:
            assert time.monotonic() < deadline, "L2 never recovered"
            await cache.set("again", 3)
            await asyncio.sleep(0.35)
        assert await l2.get("again") == 3


async def test_a_dead_redis_at_start_is_unavailable_not_a_hang(namespace: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    async with RedisCache.from_url(url, namespace=namespace) as cache:
        with pytest.raises(CacheUnavailable) as raised:
            await cache.get("k")
        assert isinstance(raised.value.__cause__, redis_errors.ConnectionError)
        report = await cache.health()
    assert report["status"] == "down"
    assert report["breaker"] == "closed"


# -- error mapping and misuse -------------------------------------------------------------

UNAVAILABLE = {
    "AuthenticationError",
    "AuthorizationError",
    "BusyLoadingError",
    "ClusterDownError",
    "ClusterError",
    "ConnectionError",
    "CrossSlotTransactionError",
    "ExternalAuthProviderError",
    "InvalidPipelineStack",
    "AskError",
    "MovedError",
    "MasterDownError",
    "MaxConnectionsError",
    "OutOfMemoryError",
    "ReadOnlyError",
    "RedisClusterException",
    "SlotNotCoveredError",
    "TimeoutError",
    "TryAgainError",
    "InvalidResponse",
}


def redis_error_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(redis_errors, inspect.isclass)
        if issubclass(cls, redis_errors.RedisError | redis_errors.RedisClusterException)
    ]


@pytest.mark.parametrize("error_class", redis_error_classes(), ids=lambda cls: cls.__name__)
def test_every_redis_error_is_translated(error_class: type[BaseException]) -> None:
    # redirect errors parse their message: "<slot> <host>:<port>"
    error = error_class("3999 127.0.0.1:7001")
    translated = translate_redis_error(error, "GET")
    assert isinstance(translated, CacheError)
    if error_class.__name__ in UNAVAILABLE:
        assert isinstance(translated, CacheUnavailable)
        assert str(translated).startswith("redis unavailable during GET: ")
    else:
        assert not isinstance(translated, CacheUnavailable)
        assert str(translated).startswith("redis rejected GET: ")


def test_socket_errors_are_unavailable() -> None:
    assert isinstance(translate_redis_error(OSError("reset"), "SET"), CacheUnavailable)
    assert isinstance(translate_redis_error(TimeoutError(), "SET"), CacheUnavailable)


async def test_a_rejected_command_does_not_trip_the_breaker(redis_cache: RedisCache) -> None:
    await redis_cache.client.set(redis_cache.tag_key("t"), "not a set")
    for _ in range(10):
        with pytest.raises(
            CacheError, match=r"redis rejected invalidate_tags: ResponseError: .*WRONGTYPE"
        ):
            await redis_cache.invalidate_tags("t")
    assert redis_cache.breaker.state is BreakerState.CLOSED
    assert redis_cache.stats().errors == 10
    await redis_cache.client.delete(redis_cache.tag_key("t"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"namespace": ""}, "namespace must be a non-empty str, got ''"),
        ({"default_ttl": 0}, "default_ttl must be > 0 or None, got 0"),
        ({"ttl_jitter": 1.0}, r"ttl_jitter must be in \[0, 1\), got 1.0"),
        ({"max_in_flight": 0}, "max_in_flight must be >= 1 or None, got 0"),
    ],
)
async def test_bad_settings_are_value_errors(
    redis_url: str, kwargs: dict[str, Any], message: str
) -> None:
    client = Redis.from_url(redis_url)
    with pytest.raises(ValueError, match=message):
        RedisCache(client, **kwargs)
    await client.aclose()


async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisCache(client)
    await client.aclose()
    with pytest.raises(TypeError, match=r"client must be a redis\.asyncio Redis or RedisCluster"):
        RedisCache("redis://127.0.0.1")  # type: ignore[arg-type]


async def test_incr_amount_must_be_an_int(redis_cache: RedisCache) -> None:
    with pytest.raises(TypeError, match=r"amount must be an int, got 1.5"):
        await redis_cache.incr("n", 1.5)  # type: ignore[arg-type]


async def test_close_leaves_a_client_it_did_not_create_open(redis_url: str, namespace: str) -> None:
    client = Redis.from_url(redis_url)
    async with RedisCache(client, namespace=namespace) as cache:
        await cache.set("k", 1)
    assert await client.get(f"{namespace}:k") == b"1"
    await client.delete(f"{namespace}:k")
    await client.aclose()


async def test_repr_and_accessors_show_live_state(redis_cache: RedisCache, namespace: str) -> None:
    await redis_cache.get("absent")
    assert redis_cache.full_key("a:b") == f"{namespace}:a:b"
    assert redis_cache.is_cluster is False
    assert repr(redis_cache) == (
        f"RedisCache(name='redis', standalone, namespace='{namespace}', "
        "hits=0, misses=1, errors=0, breaker=closed)"
    )


async def test_the_caches_own_clients_report_to_its_breakers(
    redis_url: str, redis_cluster: RedisClusterServers
) -> None:
    # what keeps a connection's set-up out of the stall timeout (see test_redis_faults)
    async with RedisCache.from_url(redis_url) as cache:
        await cache.get("absent")
        pool = cast(Redis, cache.client).connection_pool
        assert pool.connection_class is BreakerAwareConnection
    async with RedisCache.from_cluster_nodes(redis_cluster.startup_nodes) as cluster_cache:
        await cluster_cache.get_many([f"k{i}" for i in range(20)])  # every master
        nodes = cast(RedisCluster, cluster_cache.client).get_nodes()  # learned, not given
        assert {node.connection_class for node in nodes} == {BreakerAwareConnection}


async def test_a_cold_cluster_cache_takes_concurrent_first_commands(
    redis_cluster: RedisClusterServers,
) -> None:
    for round_ in range(3):  # a fresh, never-used client each round
        cache = RedisCache.from_cluster_nodes(
            redis_cluster.startup_nodes, namespace=f"cold{round_}"
        )
        async with cache:
            keys = [f"k{i}" for i in range(120)]
            await asyncio.gather(*(cache.set(k, i) for i, k in enumerate(keys)))
            values = await asyncio.gather(*(cache.get(k) for k in keys))
            assert values == list(range(120))
            await cache.clear()
