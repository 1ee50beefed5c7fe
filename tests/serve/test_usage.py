"""UsageRecorder: records reach the database in batches, behind the caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.cache.write_behind import MemoryQueue
from redline.exceptions import CacheUnavailable
from redline.serve.database import Database, usage_table
from redline.serve.testing import HashingModel
from redline.serve.usage import UsageRecorder
from tests._services import RedisServer
from tests.serve._helpers import make_settings, running_app


class _Gauge:
    def __init__(self) -> None:
        self.value = -1.0

    def set(self, value: float) -> None:
        self.value = value


def _fields(index: int) -> dict[str, Any]:
    return {
        "request_id": f"req-{index}",
        "route": "/v1/embeddings",
        "model": "m",
        "inputs": 2,
        "tokens": 5,
        "cached_inputs": 1,
        "client": "ip:127.0.0.1",
    }


async def test_records_are_written_in_batches_and_counted(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    gauge = _Gauge()
    recorder = UsageRecorder(database, max_batch=2, max_interval=30, backlog_gauge=gauge)
    await recorder.start()
    try:
        for index in range(25):
            await recorder.record(**_fields(index))
        assert recorder.stats().recorded == 25
        await recorder.flush()
        assert await database.count_usage() == 25
        assert recorder.stats().written == 25
        assert recorder.stats().backlog == 0
        assert gauge.value == 0
    finally:
        await recorder.close()
        await database.close()


async def test_a_failing_database_keeps_the_records_for_later(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")

    class Flaky:
        calls = 0

        async def insert_usage(self, records: list[dict[str, Any]]) -> None:
            self.calls += 1
            if self.calls <= 2:
                raise OSError("database restarting")
            await database.insert_usage(records)

    flaky = Flaky()
    recorder = UsageRecorder(flaky, max_batch=50, max_interval=30)
    await recorder.start()
    try:
        for index in range(3):
            await recorder.record(**_fields(index))
        await recorder.flush()
        assert await database.count_usage() == 3
        assert flaky.calls == 3
    finally:
        await recorder.close()
        await database.close()


async def test_a_replayed_batch_is_not_inserted_twice(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    try:
        rows = [{**_fields(index), "created_at": 1.0} for index in range(3)]
        await database.insert_usage(rows)
        await database.insert_usage(rows)
        assert await database.count_usage() == 3
    finally:
        await database.close()


async def test_requests_sharing_a_client_request_id_each_leave_a_row(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_app(settings, HashingModel(8)) as (client, state):
        assert state.usage is not None
        assert state.database is not None
        for index in range(20):
            response = await client.post(
                "/v1/embeddings", json={"input": f"t{index}"}, headers={"X-Request-ID": "same"}
            )
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "same"  # still echoed to the client
        await state.usage.flush()
        assert await state.database.count_usage() == 20
        async with state.database.engine.connect() as conn:
            rows = (await conn.execute(select(usage_table))).all()
    assert len({row.request_id for row in rows}) == 20  # the server's own ids key the rows
    assert {row.client_request_id for row in rows} == {"same"}


def _backlog(metrics_text: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    return families["redline_write_behind_backlog"].samples[0].value


@pytest.mark.parametrize("queue", ["memory", "redis"])
async def test_the_backlog_gauge_counts_rows_the_database_has_not_taken(
    tmp_path: Path, queue: str, request: pytest.FixtureRequest
) -> None:
    cache_url = request.getfixturevalue("redis_url") if queue == "redis" else "memory://"
    settings = make_settings(tmp_path, cache_url=cache_url, usage_queue=queue)
    async with running_app(settings, HashingModel(8)) as (client, state):
        assert state.usage is not None
        assert state.database is not None
        assert state.usage.durable is (queue == "redis")
        database = state.database
        insert = database.insert_usage
        stalled = asyncio.Event()

        async def stalled_insert(records: Sequence[dict[str, Any]]) -> None:
            await stalled.wait()  # the database is slow: rows wait in the queue
            await insert(records)

        database.insert_usage = stalled_insert  # type: ignore[method-assign]
        assert _backlog((await client.get("/metrics")).text) == 0
        for index in range(7):
            response = await client.post("/v1/embeddings", json={"input": f"g{index}"})
            assert response.status_code == 200
        await asyncio.sleep(0)  # the in-process queue takes rows one loop turn later
        assert _backlog((await client.get("/metrics")).text) == 7
        stalled.set()  # the background flusher writes them and the gauge follows
        for _ in range(200):
            if _backlog((await client.get("/metrics")).text) == 0:
                break
            await asyncio.sleep(0.05)
        assert _backlog((await client.get("/metrics")).text) == 0
        assert await database.count_usage() == 7


async def test_usage_waits_in_process_while_the_redis_stream_is_down(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    settings = make_settings(tmp_path, cache_url=f"{fresh_redis.url}?socket_timeout=0.5")
    async with running_app(settings, HashingModel(8)) as (client, state):
        assert state.usage is not None
        assert state.database is not None
        assert (await client.post("/v1/embeddings", json={"input": "up"})).status_code == 200
        await state.usage.flush()
        assert await state.database.count_usage() == 1
        fresh_redis.kill()
        for index in range(5):
            response = await client.post("/v1/embeddings", json={"input": f"down {index}"})
            assert response.status_code == 200
        assert state.usage.stats().fallbacks == 5
        fresh_redis.start()  # empty: the stream and its group are made again
        await state.usage.flush()
        assert await state.database.count_usage() == 6
        assert (await client.post("/v1/embeddings", json={"input": "back"})).status_code == 200
        await state.usage.flush()
        assert await state.database.count_usage() == 7
    assert state.usage.stats().fallbacks in (5, 6)  # "back" may come within the pause


class _SlowQueue(MemoryQueue):
    """A durable queue stand-in whose puts take *delay* seconds (``None``: frozen, so they
    fail after a 0.3 s socket timeout)."""

    def __init__(self, delay: float | None) -> None:
        super().__init__()
        self.delay = delay
        self.puts = 0

    async def put(self, key: str, value: Any, *, timeout: float) -> None:
        if self.delay is None:
            await asyncio.sleep(0.3)
            raise CacheUnavailable("Timeout reading from the stream's Redis")
        await asyncio.sleep(self.delay)
        await super().put(key, value, timeout=timeout)
        self.puts += 1


@contextlib.asynccontextmanager
async def _durable_recorder(
    tmp_path: Path, queue: _SlowQueue, breaker: CircuitBreaker
) -> AsyncIterator[tuple[UsageRecorder, Database]]:
    """A started recorder on a SQLite database, writing through *queue* guarded by *breaker*."""
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    recorder = UsageRecorder(
        database, max_interval=30, durable_queue=queue, durable_breaker=lambda: breaker
    )
    await recorder.start()
    try:
        yield recorder, database
    finally:
        await recorder.close()
        await database.close()


async def test_a_slow_but_answering_durable_queue_keeps_every_record_durable(
    tmp_path: Path,
) -> None:
    queue = _SlowQueue(0.4)  # slower than any per-write deadline a request could afford
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=1.0, stall_timeout=1.0)
    async with _durable_recorder(tmp_path, queue, breaker) as (recorder, database):
        await asyncio.gather(*(recorder.record(**_fields(index)) for index in range(5)))
        assert queue.puts == 5
        assert recorder.stats().fallbacks == 0
        await recorder.flush()
        assert await database.count_usage() == 5


async def test_records_stop_waiting_once_the_breaker_knows_redis_is_stalled(
    tmp_path: Path,
) -> None:
    queue = _SlowQueue(None)  # frozen
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=30.0, stall_timeout=0.1)
    loop = asyncio.get_running_loop()

    async def cache_read() -> None:  # a call of the cache to the same frozen node
        breaker.allow()
        async with breaker.guard():
            await asyncio.Event().wait()

    async with _durable_recorder(tmp_path, queue, breaker) as (recorder, database):
        read = asyncio.create_task(cache_read())
        started = loop.time()
        await asyncio.wait_for(recorder.record(**_fields(0)), 5)  # until the breaker opens
        with pytest.raises(CacheUnavailable):
            await read  # the breaker opened on the stall
        assert breaker.state is BreakerState.OPEN
        for index in range(1, 20):  # known stalled: no waiting at all
            await asyncio.wait_for(recorder.record(**_fields(index)), 0.05)
        assert loop.time() - started < 5
        assert recorder.stats().fallbacks == 20
        assert recorder.events.counts()["failure:durable write"] == 1
        await recorder.flush()
        assert await database.count_usage() == 20  # in process: written all the same


async def test_while_the_breaker_is_open_a_due_probe_sends_one_record_in_the_background(
    tmp_path: Path,
) -> None:
    queue = _SlowQueue(0.2)
    clock = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1.0, timer=lambda: clock[0])
    breaker.record_failure(OSError("down"))
    async with _durable_recorder(tmp_path, queue, breaker) as (recorder, database):
        await asyncio.wait_for(recorder.record(**_fields(0)), 0.05)  # open: in process
        clock[0] = 2.0  # the probe is due
        await asyncio.wait_for(recorder.record(**_fields(1)), 0.05)  # sent, not awaited
        await recorder.flush()  # waits for the probe
        assert queue.puts == 1
        assert breaker.state is BreakerState.CLOSED
        await asyncio.wait_for(recorder.record(**_fields(2)), 1.0)  # durable again
        assert queue.puts == 2
        assert recorder.stats().fallbacks == 1
        await recorder.flush()
        assert await database.count_usage() == 3


async def test_a_breaker_opened_while_the_stream_answers_costs_no_durability(
    tmp_path: Path,
) -> None:
    queue = _SlowQueue(0.0)
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30.0)
    async with _durable_recorder(tmp_path, queue, breaker) as (recorder, _):
        await recorder.record(**_fields(0))
        breaker.record_failure(TimeoutError("a cache call looked stalled on a busy box"))
        assert breaker.state is BreakerState.OPEN
        await recorder.record(**_fields(1))  # the stream answered just now: not stalled
        assert queue.puts == 2
        assert recorder.stats().fallbacks == 0
        assert breaker.state is BreakerState.CLOSED  # the answer closed it


async def test_a_write_in_flight_keeps_waiting_when_the_breaker_opens_while_the_stream_answers(
    tmp_path: Path,
) -> None:
    queue = _SlowQueue(0.0)
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30.0)
    async with _durable_recorder(tmp_path, queue, breaker) as (recorder, _):
        await recorder.record(**_fields(0))  # the stream answers
        queue.delay = 0.2
        slow = asyncio.ensure_future(recorder.record(**_fields(1)))
        await asyncio.sleep(0.05)
        breaker.record_failure(TimeoutError("a cache call looked stalled"))  # opens
        await asyncio.wait_for(slow, 5)
        assert queue.puts == 2  # waited for its answer instead of giving up
        assert recorder.stats().fallbacks == 0


async def test_a_burst_of_requests_is_written_in_few_inserts() -> None:
    class Counting:
        def __init__(self) -> None:
            self.inserts: list[int] = []

        async def insert_usage(self, records: list[dict[str, Any]]) -> None:
            self.inserts.append(len(records))

    database = Counting()
    recorder = UsageRecorder(database, max_interval=30)
    await recorder.start()
    try:
        for index in range(2500):
            await recorder.record(**_fields(index))
            await asyncio.sleep(0)  # one request per loop turn: an entry each
        await recorder.flush()
    finally:
        await recorder.close()
    assert sum(database.inserts) == 2500
    assert len(database.inserts) <= 3  # an insert costs 1-2 ms of CPU whatever its size
