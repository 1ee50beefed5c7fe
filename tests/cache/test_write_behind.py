"""Write-behind: batching, coalescing, retries, backpressure, and no loss across a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from redline.cache._queues import Delivery
from redline.cache.memory import MemoryCache
from redline.cache.sinks import PostgresSink
from redline.cache.write_behind import (
    MemoryQueue,
    RedisStreamQueue,
    RetryPolicy,
    WriteBehind,
    WriteRecord,
)
from redline.exceptions import (
    CacheError,
    CacheUnavailable,
    Closed,
    Overloaded,
    SerializationError,
)
from tests._services import HOST, PostgresServer, RedisClusterServers, RedisServer, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


class RecordingSink:
    """Keeps every batch; fails the first *failures* calls; waits for *gate* if given."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[WriteRecord]] = []
        self.failures = failures
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, batch: list[WriteRecord]) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        self.batches.append(batch)

    def latest(self) -> dict[str, Any]:
        return {r.key: r.value for batch in self.batches for r in batch}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_writes_update_the_cache_and_reach_the_sink_coalesced_per_key() -> None:
    cache = MemoryCache()
    sink = RecordingSink()
    wb = WriteBehind(cache, sink, max_interval=10)
    await wb.write("a", 1)
    await wb.write("b", 1)
    await wb.write("a", 2)
    await wb.write("a", 3)
    assert await cache.get("a") == 3  # the cache has it at once
    assert sink.batches == []  # the sink later
    await wb.flush()
    assert [(r.key, r.value) for r in sink.batches[0]] == [("a", 3), ("b", 1)]
    stats = wb.stats()
    assert (stats.written, stats.flushed, stats.coalesced, stats.pending) == (4, 2, 2, 0)
    await wb.close()


async def test_batches_are_bounded_by_size_and_interval() -> None:
    sink = RecordingSink()
    async with WriteBehind(None, sink, max_batch=10, max_interval=0.05) as wb:
        for i in range(35):
            await wb.write(f"k{i}", i)
        for _ in range(200):
            if sum(len(b) for b in sink.batches) == 35:
                break
            await asyncio.sleep(0.02)
        assert sum(len(b) for b in sink.batches) == 35  # the flusher ran on its own
        assert max(len(b) for b in sink.batches) <= 10
        assert "running" in repr(wb)


async def test_close_flushes_pending_writes_and_then_refuses_new_ones() -> None:
    sink = RecordingSink()
    wb = WriteBehind(None, sink, max_interval=30)
    for i in range(20):
        await wb.write(f"k{i}", i)
    await wb.close()
    assert sink.latest() == {f"k{i}": i for i in range(20)}
    with pytest.raises(Closed, match="write-behind is closed"):
        await wb.write("late", 1)


async def test_failing_sink_is_retried_with_backoff() -> None:
    sink = RecordingSink(failures=2)
    wb = WriteBehind(None, sink, retry=RetryPolicy(attempts=5, initial=0.01, maximum=0.05))
    await wb.write("k", "v")
    await wb.flush()
    assert sink.latest() == {"k": "v"}
    assert wb.stats().retries == 2
    assert wb.stats().failures == 0
    await wb.close()


async def test_batch_is_kept_when_retries_run_out_and_delivered_later() -> None:
    sink = RecordingSink(failures=3)
    wb = WriteBehind(None, sink, retry=RetryPolicy(attempts=2, initial=0.01, maximum=0.01))
    await wb.write("k", "v")
    with pytest.raises(ConnectionError, match="database unavailable"):
        await wb.flush()
    assert wb.stats().failures == 1
    assert wb.stats().pending == 1  # not dropped
    await wb.flush()  # third failure, then success
    assert sink.latest() == {"k": "v"}
    assert wb.stats().pending == 0
    await wb.close()


async def test_full_memory_queue_applies_backpressure_then_overloaded() -> None:
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    wb = WriteBehind(None, sink, queue=MemoryQueue(3), max_interval=0.01, put_timeout=5.0)
    for i in range(3):
        await wb.write(f"k{i}", i)
    blocked = asyncio.create_task(wb.write("k3", 3))
    await asyncio.sleep(0.1)
    assert not blocked.done()  # waiting for room, not dropped, not failed
    sink.gate.set()
    await asyncio.wait_for(blocked, 5)
    await wb.flush()
    assert sink.latest() == {f"k{i}": i for i in range(4)}

    sink.gate.clear()
    wb.put_timeout = 0.1
    for i in range(3):
        await wb.write(f"x{i}", i)
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match=r"queue is full \(3 pending\) after waiting 0.1s"):
        await wb.write("x3", 3)
    sink.gate.set()
    await wb.close()
    assert "x3" not in sink.latest()
    assert sink.latest()["x2"] == 2


def test_option_misuse_is_rejected() -> None:
    sink = RecordingSink()
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        WriteBehind(None, sink, max_batch=0)
    with pytest.raises(ValueError, match="maxsize must be >= 1, got 0"):
        MemoryQueue(0)
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="table must be a plain SQL identifier"):
        PostgresSink("postgresql://x", "users; drop table users")


class SlowReadQueue(MemoryQueue):
    """A queue whose blocking reads hold what they took for a while before returning, as a
    Redis stream read does while its reply is on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = asyncio.Event()

    async def take(self, max_items: int, timeout: float) -> list[Delivery]:
        taken = await super().take(max_items, timeout)
        if taken and timeout > 0:
            self.in_flight.set()
            await asyncio.sleep(0.2)
        return taken


async def test_flush_waits_for_records_the_flushers_read_already_took() -> None:
    sink = RecordingSink()
    queue = SlowReadQueue()
    async with WriteBehind(None, sink, queue=queue, max_interval=10) as wb:
        await wb.write("a", 1)
        await wb.write("b", 2)
        await asyncio.wait_for(queue.in_flight.wait(), 5)  # the flusher's read holds them
        await wb.flush()
        assert sink.latest() == {"a": 1, "b": 2}
        assert await wb.backlog() == 0


async def test_redis_stream_queue_delivers_and_trims_acknowledged_entries(client: Redis) -> None:
    stream = unique("{wb}:stream")
    sink = RecordingSink()
    queue = RedisStreamQueue(client, stream, "flushers", "c1")
    async with WriteBehind(None, sink, queue=queue, max_interval=10) as wb:
        await wb.write("a", {"n": 1})
        await wb.write("a", {"n": 2})
        await wb.write("b", [1, 2])
        assert await wb.backlog() == 3
        await wb.flush()
        assert sink.latest() == {"a": {"n": 2}, "b": [1, 2]}
        assert await wb.backlog() == 0
        assert await client.xlen(stream) == 0
        assert (await client.xpending(stream, "flushers"))["pending"] == 0


async def test_close_with_a_flusher_waiting_on_the_stream_delivers_everything(
    client: Redis,
) -> None:
    sink = RecordingSink()
    queue = RedisStreamQueue(client, unique("{wb}:close"), "g", "c")
    wb = WriteBehind(None, sink, queue=queue, max_batch=100, max_interval=0.05)
    await asyncio.gather(*(wb.write(f"k{i}", i) for i in range(1050)))
    await asyncio.wait_for(wb.close(), 30)  # generous: "not blocked forever"
    assert len(sink.latest()) == 1050
    assert wb.stats().pending == 0


async def test_full_redis_stream_raises_overloaded(client: Redis) -> None:
    queue = RedisStreamQueue(client, unique("{wb}:full"), "g", "c", max_pending=2)
    await queue.put("a", 1, timeout=0)
    await queue.put("b", 2, timeout=0)
    with pytest.raises(Overloaded, match=r"is full \(2 pending\) after waiting 0.05s"):
        await queue.put("c", 3, timeout=0.05)


async def test_concurrent_stream_puts_share_round_trips_and_respect_the_bound(
    client: Redis,
) -> None:
    stream = unique("{wb}:burst")
    queue = RedisStreamQueue(client, stream, "g", "c", max_pending=5)
    results = await asyncio.gather(
        *(queue.put(f"k{i}", i, timeout=0) for i in range(10)), return_exceptions=True
    )
    assert results[:5] == [None] * 5  # the first five fit, in order
    assert all(isinstance(r, Overloaded) for r in results[5:])
    entries = await client.xrange(stream)
    assert entries is not None
    assert [fields[b"k"] for _, fields in entries if fields] == [f"k{i}".encode() for i in range(5)]
    assert queue.approximate_backlog() == 5


async def test_redis_stream_queue_on_redis_cluster(redis_cluster: RedisClusterServers) -> None:
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.startup_nodes]
    )
    sink = RecordingSink()
    queue = RedisStreamQueue(cluster, unique("{wb}:cl"), "g", "c", claim_idle=0.2)
    try:
        async with WriteBehind(None, sink, queue=queue, max_interval=10) as wb:
            for i in range(50):
                await wb.write(f"k{i % 10}", i)
            await wb.flush()
        assert sink.latest() == {f"k{i}": 40 + i for i in range(10)}
    finally:
        await cluster.aclose()


async def test_postgres_sink_never_moves_a_row_backwards(postgres: PostgresServer) -> None:
    table = unique("wb_rows").replace("-", "_")
    sink = PostgresSink(postgres.dsn, table)
    try:
        await sink.create_table()
        await sink([WriteRecord("a", {"v": 2}, seq=20, written_at=0.0)])
        await sink([WriteRecord("a", {"v": 1}, seq=10, written_at=0.0)])  # late replay
        await sink([WriteRecord("b", None, seq=5, written_at=0.0)])
        conn = await asyncpg.connect(postgres.dsn)
        rows = await conn.fetch(f"SELECT key, value::text AS value, seq FROM {table} ORDER BY key")
        await conn.close()
        assert [(r["key"], r["value"], r["seq"]) for r in rows] == [
            ("a", '{"v": 2}', 20),
            ("b", "null", 5),
        ]
    finally:
        await sink.close()


def _start_worker(url: str, stream: str, group: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache._procs.wb_worker", url, stream, group, "dead", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
async def test_acknowledged_writes_survive_a_sigkill_before_flush(
    redis_url: str, postgres: PostgresServer, client: Redis
) -> None:
    stream, group, records, keys = unique("{wb}:crash"), "flushers", 300, 120
    worker = _start_worker(redis_url, stream, group, "--records", str(records), "--keys", str(keys))
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
        assert line.strip() == "ready", worker.stderr.read() if worker.stderr else ""
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.kill()
    pending = await client.xpending(stream, group)
    assert pending["pending"] > 0  # the dead flusher had a batch in flight
    assert await client.xlen(stream) == records  # every acknowledged write is in the stream

    table = unique("wb_crash").replace("-", "_")
    sink = PostgresSink(postgres.dsn, table)
    await sink.create_table()
    queue = RedisStreamQueue(client, stream, group, "restarted", claim_idle=0.3)
    wb = WriteBehind(None, sink, queue=queue, max_interval=0.05)
    try:
        for _ in range(100):
            await wb.flush()
            if await wb.backlog() == 0:
                break
            await asyncio.sleep(0.1)  # the dead consumer's entries need claim_idle to pass
        assert await wb.backlog() == 0
        conn = await asyncpg.connect(postgres.dsn)
        rows = await conn.fetch(f"SELECT key, (value->>'i')::int AS i FROM {table}")
        await conn.close()
        expected = {f"k{k}": max(i for i in range(records) if i % keys == k) for k in range(keys)}
        assert {r["key"]: r["i"] for r in rows} == expected
    finally:
        await wb.close()
        await sink.close()


async def test_memory_queue_put_with_zero_timeout_succeeds_when_there_is_room() -> None:
    queue = MemoryQueue(maxsize=1)
    await queue.put("a", 1, timeout=0)  # room: no wait needed, so no timeout
    with pytest.raises(Overloaded, match="full"):
        await queue.put("b", 2, timeout=0)
    assert queue.approximate_backlog() == 1


async def test_a_cancelled_take_is_not_swallowed_by_its_timeout() -> None:
    queue = MemoryQueue(maxsize=4)
    for _ in range(100):
        task = asyncio.create_task(queue.take(10, timeout=0.001))
        await asyncio.sleep(0.001)  # the cancel lands around the timeout
        if task.cancel():  # still pending: it must end cancelled, not return
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            assert task.result() == []


async def test_postgres_sink_that_cannot_connect_raises_cache_unavailable() -> None:
    sink = PostgresSink(f"postgresql://nobody@127.0.0.1:{free_port()}/none", "profiles")
    with pytest.raises(CacheUnavailable, match="cannot connect the PostgreSQL sink 'profiles'"):
        await sink([WriteRecord("k", {"a": 1}, seq=1, written_at=0.0)])
    assert sink.batches == 0


async def test_postgres_sink_errors_are_redline_errors(postgres: PostgresServer) -> None:
    sink = PostgresSink(postgres.dsn, f"missing_{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(CacheError, match="UndefinedTableError"):
            await sink([WriteRecord("k", {"a": 1}, seq=1, written_at=0.0)])  # no such table yet
        await sink.create_table()
        with pytest.raises(SerializationError, match="not JSON"):
            await sink([WriteRecord("k", {"a": object()}, seq=2, written_at=0.0)])
        await sink([WriteRecord("k", {"a": 1}, seq=3, written_at=0.0)])
        assert (sink.batches, sink.rows) == (1, 1)
    finally:
        await sink.close()


async def test_a_stream_read_lost_to_a_frozen_redis_does_not_strand_its_entries(
    fresh_redis: RedisServer,
) -> None:
    """A read sent to a frozen Redis times out here, but Redis runs it when it thaws: the
    entries it hands this consumer are then pending for it, with the answer gone. The next
    take must find them (they are acknowledged writes: nothing else holds them); before, they
    waited for another server's claim, ``claim_idle`` later, and a clean shutdown left them
    unwritten."""
    assert fresh_redis.proc is not None
    client = Redis(host=HOST, port=fresh_redis.port, socket_timeout=0.3)
    queue = RedisStreamQueue(client, unique("{wb}:lost"), "g", "c", block=0.05)
    try:
        assert await queue.take(10, 0) == []  # the group exists, nothing pending
        await queue.put("a", {"n": 1}, timeout=1)  # acknowledged: only the stream has it
        os.kill(fresh_redis.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(CacheUnavailable):
                await queue.take(10, 0.05)  # the XREADGROUP waits in Redis's socket
        finally:
            os.kill(fresh_redis.proc.pid, signal.SIGCONT)
        for _ in range(100):  # Redis runs the orphaned read as it resumes
            if (await client.xpending(queue.stream, "g"))["pending"]:
                break
            await asyncio.sleep(0.02)
        assert (await client.xpending(queue.stream, "g"))["pending"] == 1
        taken = await queue.take(10, 0)
        assert [(d.record.key, d.record.value) for d in taken] == [("a", {"n": 1})]
    finally:
        await client.aclose()
