"""RedisCache tag invalidation racing tagged writes, on real Redis and a real Redis Cluster.

The invariant, for a tag T and a key K written with T (``set(K, v, tags=[..., T])``):

(1) once ``invalidate_tags(T)`` has returned, K holds no value whose ``set`` completed before
    that invalidation began (a read that starts after it returned never sees one);
(2) ``invalidate_tags(T)`` never removes a value whose ``set`` began after it returned (a read
    that misses K must be explained by an invalidation that had not returned when the
    ``set`` of K's latest completed value began);
(3) so once writes have stopped, one more ``invalidate_tags(T)`` leaves no key that was ever
    written with T, and no record of T.

Each writer task owns its keys, so the writes of one key are sequential and "its latest
completed value" is well defined; values are unique.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from redline.cache.base import MISSING
from redline.cache.redis import RedisCache
from redline.exceptions import CacheError, CacheUnavailable
from tests._services import RedisClusterServers

WRITERS = 6
KEYS_PER_WRITER = 3
INVALIDATORS = 3
READERS = 2
SECONDS = 4.0
GROUPS = ("g0", "g1")


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    value: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Invalidation:
    tags: frozenset[str]
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Read:
    key: str
    value: str | None
    start: float
    end: float


def tags_of(key: str) -> frozenset[str]:
    """Every key carries "T" and one of the group tags (so tag sets sit on several nodes)."""
    return frozenset({"T", GROUPS[int(key[-1]) % len(GROUPS)]})


@pytest.fixture(params=["redis", "cluster"])
async def tag_cache(
    request: pytest.FixtureRequest, redis_url: str, namespace: str
) -> AsyncIterator[RedisCache]:
    if request.param == "redis":
        cache = RedisCache.from_url(redis_url, namespace=namespace)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cache = RedisCache.from_cluster_nodes(cluster.startup_nodes, namespace=namespace)
    yield cache
    await cache.clear()
    await cache.close()


def check(
    writes: dict[str, list[Write]], invalidations: list[Invalidation], reads: list[Read]
) -> list[str]:
    """The violations of invariants (1) and (2) in the history."""
    found: list[str] = []
    by_value = {w.value: w for ws in writes.values() for w in ws}
    for read in reads:
        history = writes[read.key]
        tags = tags_of(read.key)
        touching = [i for i in invalidations if i.tags & tags]
        completed = [w for w in history if w.end < read.start]
        if read.value is not None:
            source = by_value[read.value]
            if completed and completed[-1].start > source.end:
                found.append(f"{read}: overwritten by {completed[-1]} before the read")
            survived = [i for i in touching if i.start > source.end and i.end < read.start]
            if survived:
                found.append(f"{read}: its write {source} survived {survived[0]}")
        elif completed:
            latest = completed[-1]
            if not any(i.end > latest.start and i.start < read.end for i in touching):
                found.append(f"{read}: {latest} removed without an invalidation")
    return found


async def run_race(cache: RedisCache, seconds: float) -> tuple[list[str], int, int]:
    writes: dict[str, list[Write]] = {}
    invalidations: list[Invalidation] = []
    reads: list[Read] = []
    keys = [f"w{w}k{k}" for w in range(WRITERS) for k in range(KEYS_PER_WRITER)]
    for key in keys:
        writes[key] = []
    deadline = time.monotonic() + seconds

    async def writer(index: int) -> None:
        mine = keys[index * KEYS_PER_WRITER : (index + 1) * KEYS_PER_WRITER]
        count = 0
        while time.monotonic() < deadline:
            for key in mine:
                count += 1
                value = f"{key}:{count}"
                start = time.monotonic()
                await cache.set(key, value, ttl=60, tags=tags_of(key))
                writes[key].append(Write(key, value, start, time.monotonic()))

    async def invalidator(index: int) -> None:
        rng = random.Random(index)
        while time.monotonic() < deadline:
            tags = frozenset(rng.sample(("T", *GROUPS), rng.choice((1, 2))))
            start = time.monotonic()
            await cache.invalidate_tags(*tags)
            invalidations.append(Invalidation(tags, start, time.monotonic()))
            await asyncio.sleep(rng.random() * 0.002)

    async def reader(index: int) -> None:
        rng = random.Random(f"r{index}")
        while time.monotonic() < deadline:
            key = rng.choice(keys)
            start = time.monotonic()
            value = await cache.get(key)
            reads.append(Read(key, None if value is MISSING else value, start, time.monotonic()))

    await asyncio.gather(
        *(writer(i) for i in range(WRITERS)),
        *(invalidator(i) for i in range(INVALIDATORS)),
        *(reader(i) for i in range(READERS)),
    )
    # The final state, read after everything returned, is one more read per key.
    settled = time.monotonic()
    for key in keys:
        value = await cache.get(key)
        reads.append(Read(key, None if value is MISSING else value, settled, time.monotonic()))
    return check(writes, invalidations, reads), len(invalidations), len(reads)


async def test_invalidate_tags_never_loses_a_tagged_write_to_a_concurrent_invalidation(
    tag_cache: RedisCache,
) -> None:
    violations, invalidated, read = await run_race(tag_cache, SECONDS)
    assert invalidated > 50, invalidated
    assert read > 500, read
    assert not violations, f"{len(violations)} violations of {read} reads: {violations[:5]}"
    # (3): every key ever written carries T, so one more invalidation leaves nothing.
    await tag_cache.invalidate_tags("T", *GROUPS)
    survivors = [
        key
        for w in range(WRITERS)
        for k in range(KEYS_PER_WRITER)
        if await tag_cache.exists(key := f"w{w}k{k}")
    ]
    assert survivors == [], f"tagged keys that escaped a later invalidation: {survivors}"
    for tag in ("T", *GROUPS):
        assert not await tag_cache.client.exists(tag_cache.tag_key(tag))
    assert tag_cache.stats().errors == 0


def test_the_tag_checker_flags_survivors_and_unexplained_misses() -> None:
    key = "w0k0"
    writes = {key: [Write(key, "a", 0.0, 1.0), Write(key, "b", 5.0, 6.0)]}
    invalidations = [Invalidation(frozenset({"T"}), 2.0, 3.0)]
    reads = [
        Read(key, "a", 0.5, 0.6),  # in flight: fine
        Read(key, "a", 3.5, 3.6),  # "a" completed before the invalidation began: survivor
        Read(key, None, 3.5, 3.6),  # fine
        Read(key, "a", 7.0, 7.1),  # overwritten by "b" (and a survivor)
        Read(key, None, 7.0, 7.1),  # "b" began after the invalidation returned: wrongly gone
        Read(key, "b", 7.0, 7.1),  # fine
    ]
    found = check(writes, invalidations, reads)
    assert len(found) == 4, found
    assert check(writes, invalidations, [reads[0], reads[2], reads[5]]) == []


async def test_a_tag_that_cannot_be_recorded_leaves_no_value(tag_cache: RedisCache) -> None:
    # A value whose tag is not recorded would outlive every invalidation of that tag.
    await tag_cache.client.set(tag_cache.tag_key("broken"), b"not a tag record")
    with pytest.raises(CacheError, match="WRONGTYPE"):
        await tag_cache.set("k", 1, tags=["fine", "broken"])
    assert not await tag_cache.exists("k")
    await tag_cache.client.delete(tag_cache.tag_key("broken"))


async def test_keys_whose_node_fails_keep_their_tag_record(
    redis_cluster: RedisClusterServers, namespace: str
) -> None:
    cache = RedisCache.from_cluster_nodes(redis_cluster.startup_nodes, namespace=namespace)
    client = cache.client
    keys = [f"k{i}" for i in range(30)]
    try:
        for key in keys:
            await cache.set(key, key, tags=["t"])
        owner = {key: client.get_node_from_key(cache.full_key(key)).name for key in keys}  # type: ignore[union-attr]
        record_node = client.get_node_from_key(cache.tag_key("t")).name  # type: ignore[union-attr]
        victim = next(name for name in sorted(set(owner.values())) if name != record_node)
        server = next(n for n in redis_cluster.nodes if victim.endswith(f":{n.port}"))
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # below the cluster's node timeout: no failover
        try:
            with pytest.raises(CacheUnavailable):
                await cache.invalidate_tags("t")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        stranded = {cache.full_key(key).encode() for key in keys if owner[key] == victim}
        assert stranded
        assert stranded <= set(await client.zrange(cache.tag_key("t"), 0, -1))
        for key in keys:
            if owner[key] != victim:
                assert await client.exists(cache.full_key(key)) == 0
        deadline = time.monotonic() + 10
        while True:  # until the frozen master's breaker lets calls through again
            try:
                removed = await cache.invalidate_tags("t")
                break
            except CacheUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert removed <= len(stranded)  # the frozen node may have run the first UNLINKs late
        assert [key for key in keys if await cache.exists(key)] == []
        assert await client.exists(cache.tag_key("t")) == 0
    finally:
        await cache.clear()
        await cache.close()
