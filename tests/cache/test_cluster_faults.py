"""A Redis Cluster master killed under load: only its keys stop hitting, and only until failover.

Each test gets a private 6-node cluster (3 masters + 3 replicas) so it can SIGKILL a master.
It runs with ``cluster-require-full-coverage no``, as a cache cluster should: with the default
(``yes``) Redis itself answers CLUSTERDOWN for every key, on every master, from the moment the
dead master is flagged FAIL until its replica is promoted (about 1 s here), whatever the client
does (``benchmarks/faults_bench.py`` measures both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from redline.cache.breaker import BreakerState
from redline.cache.redis import RedisCache
from redline.exceptions import CacheUnavailable
from tests._services import RedisClusterServers, RedisServer

KEYS = 240
SLOW = 1.0  # seconds: twice the cache's socket timeout


@pytest.fixture
def private_cluster() -> Iterator[RedisClusterServers]:
    """A 6-node cluster of this test's own: it may kill a master."""
    cluster = RedisClusterServers().start()
    for node in cluster.nodes:
        node.cli("config", "set", "cluster-require-full-coverage", "no")
    yield cluster
    cluster.stop()


@pytest.fixture
async def loaded(
    private_cluster: RedisClusterServers, namespace: str
) -> AsyncIterator[tuple[RedisCache, dict[str, str]]]:
    """A cluster cache holding KEYS keys, and the master (``host:port``) owning each."""
    # the default breaker per master: 3 failures or 0.25 s without an answer, 1 s reset
    cache = RedisCache.from_cluster_nodes(private_cluster.startup_nodes, namespace=namespace)
    await cache.set_many({f"k{i}": i for i in range(KEYS)})
    owners = {
        f"k{i}": cache.client.get_node_from_key(cache.full_key(f"k{i}")).name  # type: ignore[union-attr]
        for i in range(KEYS)
    }
    await asyncio.to_thread(private_cluster.wait_for_replicas, 30.0)
    yield cache, owners
    with contextlib.suppress(Exception):
        await cache.close()


def server_of(cluster: RedisClusterServers, address: str) -> RedisServer:
    port = int(address.rsplit(":", 1)[1])
    return next(node for node in cluster.nodes if node.port == port)


async def promoted_at(replica: RedisServer) -> float:
    """When (monotonic) *replica* became a master (its master was killed)."""
    while (await asyncio.to_thread(replica.cli, "role")).splitlines()[0] != "master":
        await asyncio.sleep(0.05)
    return time.monotonic()


@dataclass
class Load:
    """Outcomes of reads: (monotonic start, key, "hit" | "slow" | "miss" | "unavailable")."""

    records: list[tuple[float, str, str]] = field(default_factory=list)
    timings: list[tuple[float, str, str, float]] = field(default_factory=list)
    raised: list[BaseException] = field(default_factory=list)
    slowest: float = 0.0

    def hit_ratio(self, keys: set[str], start: float, end: float) -> float:
        outcomes = [o for t, k, o in self.records if k in keys and start <= t < end]
        return sum(o == "hit" for o in outcomes) / max(1, len(outcomes))

    def first_hit(self, keys: set[str], after: float) -> float | None:
        times = [t for t, k, o in self.records if k in keys and t >= after and o == "hit"]
        return min(times, default=None)


async def read_load(cache: RedisCache, load: Load, stop: asyncio.Event, rate: int = 250) -> None:
    """Open loop: *rate* reads a second of random keys, each started on time whatever the
    ones before it are doing (as requests reach a server)."""

    async def read(key: str) -> None:
        started = time.monotonic()
        try:
            value = await cache.get(key)
            # A hit that waited longer than the socket timeout served nobody in time.
            slow = time.monotonic() - started > SLOW
            outcome = "miss" if value != int(key[1:]) else "slow" if slow else "hit"
        except CacheUnavailable:
            outcome = "unavailable"
        except Exception as exc:  # anything else reached the caller: a failure
            load.raised.append(exc)
            outcome = "raised"
        seconds = time.monotonic() - started
        load.slowest = max(load.slowest, seconds)
        load.records.append((started, key, outcome))
        load.timings.append((started, key, outcome, seconds))

    rng = random.Random(7)
    tasks: set[asyncio.Task[None]] = set()
    tick = 0.01
    next_at = time.monotonic()
    while not stop.is_set():
        for _ in range(int(rate * tick)):
            task = asyncio.create_task(read(f"k{rng.randrange(KEYS)}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        next_at = max(next_at + tick, time.monotonic() - 0.1)  # a busy box: no snowball
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*tasks)


async def test_a_killed_master_costs_only_its_own_keys_until_failover(
    private_cluster: RedisClusterServers,
    loaded: tuple[RedisCache, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, owners = loaded
    victim_address = owners["k0"]
    victim = server_of(private_cluster, victim_address)
    victim_keys = {k for k, owner in owners.items() if owner == victim_address}
    other_keys = set(owners) - victim_keys
    replica = private_cluster.replica_of(victim)
    load, stop = Load(), asyncio.Event()
    caplog.set_level(logging.INFO, logger="redline")
    runner = asyncio.create_task(read_load(cache, load, stop))
    await asyncio.sleep(1.0)
    killed_at = time.monotonic()
    victim.kill()
    failover_at = await asyncio.wait_for(promoted_at(replica), 30)
    await asyncio.sleep(3.0)
    stop.set()
    await runner
    end = time.monotonic()

    before = load.hit_ratio(other_keys, 0.0, killed_at)
    during = load.hit_ratio(other_keys, killed_at, end)
    recovered = load.first_hit(victim_keys, failover_at)
    print(
        f"other masters' keys hit ratio before {before:.3f}, during {during:.3f}; failover "
        f"{failover_at - killed_at:.2f}s after the kill; the dead master's keys hit again "
        f"{None if recovered is None else round(recovered - failover_at, 2)}s after it; "
        f"slowest read {load.slowest:.3f}s"
    )
    assert not load.raised, f"errors other than CacheUnavailable reached callers: {load.raised[:3]}"
    assert before > 0.99
    assert during >= 0.95 * before, f"other masters' keys: {during:.3f} vs {before:.3f} before"
    assert recovered is not None, "the dead master's keys never hit again"
    assert recovered - failover_at < 2.0, "slow to follow the failover"
    # and after that they keep hitting, on the promoted replica with a breaker of its own
    assert load.hit_ratio(victim_keys, recovered + 0.5, end) > 0.99
    new_owner = cache.client.get_node_from_key(cache.full_key("k0")).name  # type: ignore[union-attr]
    assert new_owner != victim_address
    assert cache.breakers()[new_owner].state is BreakerState.CLOSED
    # one line per state change and cause, not one per failed read
    lines = [r for r in caplog.records if r.name.startswith("redline.cache")]
    assert len(lines) <= 5, [r.getMessage() for r in lines]
    events = cache.stats().tier("redis").events
    assert events.get("state:open", 0) >= 1
    assert events.get("failure:call", 0) >= 1


async def test_a_frozen_master_stalls_only_its_own_keys_and_only_briefly(
    private_cluster: RedisClusterServers, loaded: tuple[RedisCache, dict[str, str]]
) -> None:
    cache, owners = loaded
    victim_address = owners["k0"]
    victim = server_of(private_cluster, victim_address)
    victim_keys = {k for k, owner in owners.items() if owner == victim_address}
    other_keys = set(owners) - victim_keys
    load, stop = Load(), asyncio.Event()
    runner = asyncio.create_task(read_load(cache, load, stop))
    await asyncio.sleep(1.0)
    assert victim.proc is not None
    frozen_at = time.monotonic()
    os.kill(victim.proc.pid, signal.SIGSTOP)  # shorter than the node timeout: no failover
    try:
        await asyncio.sleep(1.5)
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    thawed_at = time.monotonic()
    await asyncio.sleep(2.5)
    stop.set()
    await runner

    during = load.hit_ratio(other_keys, frozen_at, thawed_at)
    victim_waits = [
        seconds
        for started, key, _, seconds in load.timings
        if key in victim_keys and frozen_at <= started < thawed_at
    ]
    back = load.first_hit(victim_keys, thawed_at)
    again = None if back is None else round(back - thawed_at, 2)
    print(
        f"frozen master: other keys hit {during:.3f}; its own keys' slowest read "
        f"{max(victim_waits):.3f}s; hit again {again}s after the thaw"
    )
    assert not load.raised, load.raised[:3]
    assert during >= 0.95
    assert max(victim_waits) < 0.8  # the stall timeout, not a socket timeout per call
    assert back is not None
    assert back - thawed_at < 2.0
