"""MicroBatcher: dynamic batching, dedup, cancellation, isolation, backpressure, lifecycle."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import numpy as np
import pytest

from redline.concurrency import BatcherStats, BatchRecord, MicroBatcher
from redline.exceptions import Closed, Overloaded, WorkerCrashed


class Recorder:
    """An async batch_fn that records every batch it sees and can be held open."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[Any]] = []
        self.delay = delay
        self.gate: asyncio.Event | None = None

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return [("done", item) for item in items]


async def test_submit_returns_each_items_own_result() -> None:
    async with MicroBatcher(Recorder(), max_batch_size=8) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [("done", i) for i in range(20)]


async def test_max_batch_size_is_never_exceeded() -> None:
    fn = Recorder(delay=0.01)
    async with MicroBatcher(fn, max_batch_size=5, max_wait=0.05) as batcher:
        await asyncio.gather(*(batcher.submit(i) for i in range(23)))
        stats = batcher.stats()
    assert max(len(b) for b in fn.batches) <= 5
    assert sorted(x for b in fn.batches for x in b) == list(range(23))
    assert stats.items == 23
    assert sum(size * n for size, n in stats.batch_size_histogram.items()) == 23
    assert max(stats.batch_size_histogram) <= 5


async def test_concurrent_submitters_are_batched_together() -> None:
    fn = Recorder(delay=0.02)
    async with MicroBatcher(fn, max_batch_size=64) as batcher:
        await asyncio.gather(*(batcher.submit(i) for i in range(40)))
        stats = batcher.stats()
    assert stats.batches <= 3
    assert stats.mean_batch_size >= 10


async def test_lone_request_on_idle_batcher_is_not_delayed_by_max_wait() -> None:
    fn = Recorder()
    async with MicroBatcher(fn, max_batch_size=32, max_wait=5.0) as batcher:
        started = time.monotonic()
        result = await asyncio.wait_for(batcher.submit("alone"), timeout=2.0)
        elapsed = time.monotonic() - started
    assert result == ("done", "alone")
    assert elapsed < 2.0  # max_wait was 5 s: the lone item never waited for company
    assert fn.batches == [["alone"]]


async def test_fill_wait_uses_injected_timer() -> None:
    """While more work arrives, the worker waits to fill the batch until the timer says so."""
    now = [0.0]
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=100, max_wait=1.0, timer=lambda: now[0])
    async with batcher:
        first = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        more = [asyncio.create_task(batcher.submit(i)) for i in range(3, 6)]
        await asyncio.sleep(0.05)
        assert fn.batches == []  # frozen clock: still inside max_wait, still filling
        now[0] = 2.0
        more.append(asyncio.create_task(batcher.submit(6)))  # wakes the worker to re-check
        await asyncio.gather(*first, *more)
    assert fn.batches == [list(range(7))]


async def test_dedup_computes_identical_inflight_items_once() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    async with MicroBatcher(fn, max_batch_size=16, dedup=True) as batcher:
        tasks = [asyncio.create_task(batcher.submit(x)) for x in ["a", "b", "a", "a", "b"]]
        await asyncio.sleep(0.01)
        fn.gate.set()
        results = await asyncio.gather(*tasks)
        stats = batcher.stats()
    assert results == [("done", x) for x in ["a", "b", "a", "a", "b"]]
    assert sorted(x for b in fn.batches for x in b) == ["a", "b"]
    assert stats.dedup_hits == 3


async def test_dedup_key_function_groups_equal_keys() -> None:
    fn = Recorder()
    async with MicroBatcher(fn, dedup_key=str.lower) as batcher:
        results = await asyncio.gather(batcher.submit("Hi"), batcher.submit("HI"))
        assert batcher.stats().dedup_hits == 1
    assert list(results) == [("done", "Hi"), ("done", "Hi")]


async def test_cancelled_caller_item_never_reaches_batch_fn() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    async with MicroBatcher(fn, max_batch_size=1) as batcher:
        blocker = asyncio.create_task(batcher.submit("blocker"))
        await asyncio.sleep(0.01)  # worker now holds "blocker" at the gate
        doomed = asyncio.create_task(batcher.submit("doomed"))
        kept = asyncio.create_task(batcher.submit("kept"))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.sleep(0)
        assert batcher.stats().queue_depth == 1
        fn.gate.set()
        assert await kept == ("done", "kept")
        assert await blocker == ("done", "blocker")
    assert doomed.cancelled()
    assert ["doomed"] not in fn.batches
    assert fn.batches == [["blocker"], ["kept"]]


async def test_timeout_raises_and_dedup_partner_still_gets_result() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    async with MicroBatcher(fn, max_batch_size=1, dedup=True) as batcher:
        blocker = asyncio.create_task(batcher.submit("blocker"))
        await asyncio.sleep(0.01)
        partner = asyncio.create_task(batcher.submit("x"))
        with pytest.raises(TimeoutError):
            await batcher.submit("x", timeout=0.02)
        fn.gate.set()
        assert await partner == ("done", "x")
        await blocker
        assert batcher.stats().dedup_hits == 1
    assert fn.batches == [["blocker"], ["x"]]


async def test_batch_error_fails_only_that_batch_and_worker_survives() -> None:
    async def flaky(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("unlucky batch")
        return [i * 2 for i in items]

    async with MicroBatcher(flaky, max_batch_size=1) as batcher:
        with pytest.raises(RuntimeError, match="unlucky batch"):
            await batcher.submit(13)
        assert await batcher.submit(4) == 8
        assert batcher.health().alive
        assert batcher.stats().errors == 1


async def test_retry_individually_fails_only_the_bad_item() -> None:
    seen: list[list[int]] = []

    async def picky(items: list[int]) -> list[int]:
        seen.append(list(items))
        if 13 in items:
            raise ValueError("13 is bad")
        return [i * 2 for i in items]

    fn_batcher = MicroBatcher(picky, max_batch_size=8, retry_individually=True)
    async with fn_batcher as batcher:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in [1, 13, 3]), return_exceptions=True
        )
    assert results[0] == 2
    assert isinstance(results[1], ValueError)
    assert results[2] == 6
    assert [1, 13, 3] in seen
    assert [1] in seen
    assert [3] in seen


async def test_wrong_result_count_is_a_clear_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async with MicroBatcher(short) as batcher:
        with pytest.raises(ValueError, match=r"^batch_fn returned 0 results for 1 items$"):
            await batcher.submit(1)


async def test_dead_worker_is_restarted_and_reported_in_health() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=4)
    original = batcher._take
    calls = 0

    def take_once_broken() -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("worker bug")
        return original()

    batcher._take = take_once_broken  # type: ignore[method-assign]
    async with batcher:
        # the item queued when the loop died is still served by the restarted loop
        result = await asyncio.wait_for(batcher.submit("a"), timeout=5)
        health = batcher.health()
    assert result == ("done", "a")
    assert health.alive
    assert health.restarts == 1
    assert health.last_error == "RuntimeError: worker bug"
    assert batcher.stats().worker_restarts == 1


async def test_items_of_a_batch_running_when_worker_dies_get_worker_crashed() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn)

    async def exploding_complete(dispatched: object) -> None:
        raise RuntimeError("boom in run")

    batcher._complete = exploding_complete  # type: ignore[method-assign]
    async with batcher:
        with pytest.raises(WorkerCrashed, match="worker died: boom in run"):
            await asyncio.wait_for(batcher.submit("x"), timeout=5)
        assert batcher.health().restarts >= 1
        assert batcher.health().alive


async def test_full_queue_raises_overloaded_immediately() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    async with MicroBatcher(fn, max_batch_size=1, max_queue=2) as batcher:
        running = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match=r"queue is full \(2 items\)"):
            await batcher.submit(3)
        assert batcher.stats().rejected == 1
        fn.gate.set()
        assert await asyncio.gather(running, *queued) == [("done", i) for i in range(3)]


async def test_close_drains_queued_work_then_rejects_new_work() -> None:
    fn = Recorder(delay=0.01)
    batcher = MicroBatcher(fn, max_batch_size=2)
    await batcher.start()
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
    await asyncio.sleep(0)
    await batcher.close(drain=True)
    assert await asyncio.gather(*tasks) == [("done", i) for i in range(6)]
    with pytest.raises(Closed):
        await batcher.submit(99)
    assert not batcher.health().alive
    assert "closed" in repr(batcher)


async def test_close_without_drain_fails_queued_items_with_closed() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    batcher = MicroBatcher(fn, max_batch_size=1)
    await batcher.start()
    running = asyncio.create_task(batcher.submit("running"))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(batcher.submit("queued"))
    await asyncio.sleep(0)
    await batcher.close(drain=False)
    with pytest.raises(Closed):
        await queued
    with pytest.raises(Closed):
        await running
    assert fn.batches == [["running"]]


async def test_cost_budget_limits_batch_cost() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    records: list[BatchRecord] = []
    batcher = MicroBatcher(
        fn, max_batch_size=100, cost_fn=len, max_batch_cost=10, on_batch=records.append
    )
    async with batcher:
        blocker = asyncio.create_task(batcher.submit("z"))
        await asyncio.sleep(0.01)
        words = ["aaaa", "bbbb", "cc", "dddddd", "eeeeeeeeeeeee", "f"]
        tasks = [asyncio.create_task(batcher.submit(w)) for w in words]
        await asyncio.sleep(0)
        fn.gate.set()
        await asyncio.gather(blocker, *tasks)
    assert fn.batches[1:] == [["aaaa", "bbbb", "cc"], ["dddddd"], ["eeeeeeeeeeeee"], ["f"]]
    assert [r.cost for r in records] == [1, 10, 6, 13, 1]  # a too-costly item runs alone
    assert all(r.error is None and len(r.queue_waits) == r.size for r in records)


async def test_group_fn_keeps_buckets_apart() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    async with MicroBatcher(fn, max_batch_size=100, group_fn=lambda s: len(s) > 3) as batcher:
        blocker = asyncio.create_task(batcher.submit("zz"))
        await asyncio.sleep(0.01)
        words = ["a", "long word", "b", "longer words", "c"]
        tasks = [asyncio.create_task(batcher.submit(w)) for w in words]
        await asyncio.sleep(0)
        fn.gate.set()
        await asyncio.gather(blocker, *tasks)
    assert fn.batches[1:] == [["a", "b", "c"], ["long word", "longer words"]]


def _hash_rounds(items: list[bytes]) -> list[str]:
    out = []
    for item in items:
        digest = item
        for _ in range(20_000):
            digest = hashlib.sha256(digest).digest()
        out.append(digest.hex())
    return out


async def test_sync_cpu_bound_batch_fn_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def matmul_and_hash(items: list[bytes]) -> list[str]:
        threads.append(threading.get_ident())
        matrix = np.random.default_rng(0).random((200, 200))
        for _ in range(20):
            matrix = matrix @ matrix / np.linalg.norm(matrix)
        return _hash_rounds(items)

    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    stop = asyncio.Event()
    async with MicroBatcher(matmul_and_hash, max_batch_size=8) as batcher:
        tick_task = asyncio.create_task(ticker(stop))
        items = [f"item-{i}".encode() for i in range(16)]
        results = await asyncio.gather(*(batcher.submit(i) for i in items))
        stop.set()
        await tick_task
    assert results == _hash_rounds(items)
    assert threads
    assert loop_thread not in threads
    assert ticks > 3  # the loop kept ticking while the CPU work ran


async def test_stats_histogram_and_on_batch_records() -> None:
    """Queue waits and run times come from the injected timer; each batch runs 0.25 s."""
    now = [0.0]
    gate = asyncio.Event()

    async def slow_quarter(items: list[int]) -> list[int]:
        await gate.wait()
        now[0] += 0.25
        return items

    records: list[BatchRecord] = []
    batcher = MicroBatcher(slow_quarter, on_batch=records.append, timer=lambda: now[0])
    async with batcher:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)  # 1 runs alone, held at the gate
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 6)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(first, *rest) == [1, 2, 3, 4, 5]
        stats = batcher.stats()
    assert isinstance(stats, BatcherStats)
    assert stats.items == 5 == sum(r.size for r in records)
    assert stats.batches == len(records) == 2
    assert stats.batch_size_histogram == {1: 1, 4: 1}
    assert [r.queue_waits for r in records] == [(0.0,), (0.25, 0.25, 0.25, 0.25)]
    assert [r.run_seconds for r in records] == [0.25, 0.25]
    assert stats.queue_wait_seconds_total == pytest.approx(1.0)
    assert stats.run_seconds_total == pytest.approx(0.5)
    with pytest.raises(AttributeError):
        stats.items = 0  # type: ignore[misc]


async def test_on_batch_error_does_not_kill_worker(caplog: pytest.LogCaptureFixture) -> None:
    def bad_observer(record: BatchRecord) -> None:
        raise RuntimeError("observer broke")

    async with MicroBatcher(Recorder(), on_batch=bad_observer) as batcher:
        assert await batcher.submit(1) == ("done", 1)
        assert await batcher.submit(2) == ("done", 2)
        assert batcher.health().restarts == 0
    assert "on_batch callback failed" in caplog.text


async def test_submit_before_start_is_a_clear_error() -> None:
    batcher = MicroBatcher(Recorder(), name="emb")
    with pytest.raises(RuntimeError, match=r"^MicroBatcher 'emb' is not started"):
        await batcher.submit(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1, got 0"),
        ({"max_queue": 0}, "max_queue must be >= 1, got 0"),
        ({"max_wait": -1}, "max_wait must be >= 0, got -1"),
        ({"max_batch_cost": 5}, "max_batch_cost needs a cost_fn"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        MicroBatcher(Recorder(), **kwargs)  # type: ignore[arg-type]


async def test_repr_shows_live_state() -> None:
    batcher = MicroBatcher(Recorder(), name="emb", max_queue=7)
    assert repr(batcher).startswith("<MicroBatcher 'emb' new queue=0/7")
    async with batcher:
        await batcher.submit(1)
        assert "running" in repr(batcher)
        assert "items=1" in repr(batcher)


async def test_unhashable_items_are_simply_not_deduplicated() -> None:
    fn = Recorder()
    async with MicroBatcher(fn, dedup=True) as batcher:
        results = await asyncio.gather(batcher.submit([1]), batcher.submit([1]))
        assert batcher.stats().dedup_hits == 0
    assert list(results) == [("done", [1]), ("done", [1])]
    assert sum(len(b) for b in fn.batches) == 2


async def test_item_abandoned_by_its_only_caller_is_not_reused_by_dedup() -> None:
    fn = Recorder()
    fn.gate = asyncio.Event()
    async with MicroBatcher(fn, max_batch_size=1, dedup=True) as batcher:
        blocker = asyncio.create_task(batcher.submit("blocker"))
        await asyncio.sleep(0.01)
        abandoned = asyncio.create_task(batcher.submit("x"))
        await asyncio.sleep(0)
        abandoned.cancel()
        await asyncio.sleep(0)
        fresh = asyncio.create_task(batcher.submit("x"))
        await asyncio.sleep(0)
        assert batcher.stats().queue_depth == 1
        fn.gate.set()
        assert await fresh == ("done", "x")
        await blocker
        assert batcher.stats().dedup_hits == 0
    assert fn.batches == [["blocker"], ["x"]]


async def test_sync_batches_run_one_at_a_time_in_a_dedicated_thread_in_fifo_order() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0
    seen: list[tuple[str, list[int]]] = []

    def slow_double(items: list[int]) -> list[int]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        seen.append((threading.current_thread().name, list(items)))
        return [i * 2 for i in items]

    async with MicroBatcher(slow_double, max_batch_size=2, name="emb") as batcher:
        # full batches are queued: the next one is handed to the model thread early
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert peak == 1
    assert [items for _, items in seen] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert {name.split("_")[0] for name, _ in seen} == {"batcher-emb"}


async def test_pipelined_batch_error_fails_only_its_own_callers() -> None:
    def picky(items: list[int]) -> list[int]:
        time.sleep(0.01)
        if 3 in items:
            raise RuntimeError("bad batch")
        return items

    async with MicroBatcher(picky, max_batch_size=2) as batcher:
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(6)), return_exceptions=True
        )
        assert batcher.stats().errors == 1
    assert results[:2] == [0, 1]
    assert all(isinstance(r, RuntimeError) for r in results[2:4])
    assert results[4:] == [4, 5]


async def test_close_stops_the_model_thread() -> None:
    def identity(items: list[int]) -> list[int]:
        return items

    def model_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("batcher-closing_")]

    batcher = MicroBatcher(identity, name="closing")
    async with batcher:
        assert await batcher.submit(1) == 1
        assert len(model_threads()) == 1
    for _ in range(200):
        if not model_threads():
            break
        await asyncio.sleep(0.01)
    assert model_threads() == []
