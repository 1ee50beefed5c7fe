"""MicroBatcher under a misbehaving batch function, a dead worker and callers that give up."""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import Any

import pytest

from redline.concurrency import MicroBatcher
from redline.exceptions import (
    BatchFailed,
    BatchResultError,
    BatchTimeout,
    ConcurrencyError,
    NotStarted,
    RedlineError,
    WorkerCrashed,
)


def _doubling_unless(bad: object, exc: BaseException) -> Any:
    async def batch(items: list[object]) -> list[object]:
        if bad in items:
            raise exc
        return [item * 2 for item in items]  # type: ignore[operator]

    return batch


@pytest.mark.parametrize(
    ("exc", "sync"),
    [
        (asyncio.CancelledError("inner call cancelled"), False),
        (asyncio.CancelledError("inner call cancelled"), True),
        (GeneratorExit(), False),
        (GeneratorExit(), True),
        (KeyboardInterrupt(), True),
        (SystemExit(2), True),
    ],
    ids=[
        "CancelledError-async",
        "CancelledError-sync",
        "GeneratorExit-async",
        "GeneratorExit-sync",
        "KeyboardInterrupt-sync",
        "SystemExit-sync",
    ],
)
async def test_batch_fn_base_exception_fails_only_its_batch(exc: BaseException, sync: bool) -> None:
    calls: list[list[int]] = []

    def sync_batch(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise exc
        return [item * 2 for item in items]

    async def async_batch(items: list[int]) -> list[int]:
        return sync_batch(items)

    batcher = MicroBatcher(sync_batch if sync else async_batch, max_batch_size=1)
    async with batcher:
        with pytest.raises(BatchFailed, match=type(exc).__name__) as failed:
            await asyncio.wait_for(batcher.submit(13), timeout=5)
        assert isinstance(failed.value.__cause__, type(exc))
        # the worker lives on: later submits, with or without a timeout, are served
        assert await asyncio.wait_for(batcher.submit(4), timeout=5) == 8
        assert await batcher.submit(5, timeout=5) == 10
        health = batcher.health()
    assert health.alive
    assert health.restarts == 0
    assert batcher.stats().errors == 1
    assert calls == [[13], [4], [5]]


def test_system_exit_from_async_batch_fn_stops_the_loop_and_fails_only_its_batch() -> None:
    """asyncio re-raises SystemExit out of the loop; if the loop goes on, so does the batcher."""
    loop = asyncio.new_event_loop()
    try:
        batcher = MicroBatcher(_doubling_unless("exit", SystemExit(3)), max_batch_size=1)
        loop.run_until_complete(batcher.start())
        doomed = loop.create_task(batcher.submit("exit"))
        with pytest.raises(SystemExit):
            loop.run_until_complete(doomed)
        with pytest.raises(BatchFailed, match="SystemExit"):
            loop.run_until_complete(doomed)
        assert loop.run_until_complete(batcher.submit("ok", timeout=5)) == "okok"
        assert batcher.health().alive
        loop.run_until_complete(batcher.close())
    finally:
        loop.close()


async def test_batch_fn_timeout_error_is_its_own_not_a_batch_timeout() -> None:
    async with MicroBatcher(_doubling_unless(1, TimeoutError("upstream slow"))) as batcher:
        with pytest.raises(TimeoutError, match="upstream slow") as raised:
            await batcher.submit(1, timeout=5)
    assert not isinstance(raised.value, BatchTimeout)


async def test_submit_past_its_timeout_raises_batch_timeout() -> None:
    gate = asyncio.Event()

    async def held(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    async with MicroBatcher(held, name="emb") as batcher:
        with pytest.raises(BatchTimeout, match=r"^MicroBatcher 'emb': no result within 0.02s$"):
            await batcher.submit(1, timeout=0.02)
        gate.set()
        assert await batcher.submit(2, timeout=5) == 2


async def test_batch_timeout_cancels_a_hung_batch_and_the_worker_moves_on() -> None:
    started: list[list[int]] = []
    ended: list[str] = []

    async def hangs_on_zero(items: list[int]) -> list[int]:
        started.append(list(items))
        if 0 in items:
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                ended.append("cancelled")
                raise
        return items

    tasks_before = asyncio.all_tasks()
    batcher = MicroBatcher(hangs_on_zero, max_batch_size=1, batch_timeout=0.05, name="emb")
    async with batcher:
        hung = asyncio.create_task(batcher.submit(0))  # no timeout of its own
        later = asyncio.create_task(batcher.submit(1))
        with pytest.raises(BatchTimeout, match=r"batch_fn ran past batch_timeout=0.05s"):
            await asyncio.wait_for(hung, timeout=5)
        assert await asyncio.wait_for(later, timeout=5) == 1
        assert batcher.health().alive
    assert started == [[0], [1]]
    assert ended == ["cancelled"]
    assert asyncio.all_tasks() == tasks_before


async def test_batch_timeout_with_a_sync_batch_fn_frees_its_callers() -> None:
    def slow_on_zero(items: list[int]) -> list[int]:
        if 0 in items:
            time.sleep(0.3)
        return items

    async with MicroBatcher(slow_on_zero, max_batch_size=1, batch_timeout=0.05) as batcher:
        begun = time.monotonic()
        with pytest.raises(BatchTimeout):
            await batcher.submit(0)
        assert time.monotonic() - begun < 0.29  # freed at the batch timeout, not after 0.3 s
        assert batcher.health().alive
        await asyncio.sleep(0.4)  # the model thread cannot be interrupted: it finishes first
        assert await asyncio.wait_for(batcher.submit(1), timeout=5) == 1


async def test_worker_cancelled_from_outside_fails_waiters_and_submit_fails_fast() -> None:
    gate = asyncio.Event()

    async def held(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    batcher = MicroBatcher(held, max_batch_size=1, name="emb")
    await batcher.start()
    running = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(batcher.submit(2))  # no timeout: must not hang
    await asyncio.sleep(0)
    worker = batcher._worker
    assert worker is not None
    worker.cancel()
    with pytest.raises(WorkerCrashed, match="worker was cancelled"):
        await asyncio.wait_for(running, timeout=5)
    with pytest.raises(WorkerCrashed, match="worker stopped: CancelledError"):
        await asyncio.wait_for(queued, timeout=5)
    with pytest.raises(WorkerCrashed, match=r"^MicroBatcher 'emb' worker is not running"):
        await asyncio.wait_for(batcher.submit(3), timeout=5)
    health = batcher.health()
    assert not health.alive
    assert health.last_error == "CancelledError: the worker task was cancelled"
    gate.set()
    await batcher.start()  # a fresh worker
    assert await asyncio.wait_for(batcher.submit(4), timeout=5) == 4
    assert batcher.health().alive
    assert batcher.health().restarts == 1
    await batcher.close()


async def test_a_batch_whose_callers_all_left_while_it_filled_is_never_run() -> None:
    calls: list[list[int]] = []

    async def record(items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    async with MicroBatcher(record, max_wait=0.05) as batcher:
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0)
        second = asyncio.create_task(batcher.submit(2))  # arrives while the worker looks
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the worker now waits to fill the batch
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        await asyncio.sleep(0.15)  # past max_wait
        assert await batcher.submit(3, timeout=5) == 3
    assert calls == [[3]]


async def test_wrong_results_are_a_batch_result_error() -> None:
    async def not_a_list(items: list[int]) -> Any:
        return 42

    async with MicroBatcher(not_a_list) as batcher:
        with pytest.raises(BatchResultError, match=r"^batch_fn must return a sequence, got int$"):
            await batcher.submit(1)


def test_sync_batch_fn_stop_iteration_is_an_error_not_a_hang() -> None:
    def stops(items: list[int]) -> list[int]:
        raise StopIteration

    async def main() -> None:
        async with MicroBatcher(stops) as batcher:
            with pytest.raises(RuntimeError, match="batch_fn raised StopIteration"):
                await asyncio.wait_for(batcher.submit(1), timeout=5)

    asyncio.run(main())


async def test_submit_before_start_raises_not_started() -> None:
    with pytest.raises(NotStarted, match=r"^MicroBatcher 'emb' is not started"):
        await MicroBatcher(_doubling_unless(None, RuntimeError()), name="emb").submit(1)


@pytest.mark.parametrize(
    ("exc", "builtin"),
    [
        (BatchTimeout("MicroBatcher 'emb': no result within 0.5s"), TimeoutError),
        (NotStarted("MicroBatcher 'emb' is not started"), RuntimeError),
        (BatchResultError("batch_fn returned 0 results for 1 items"), ValueError),
        (BatchFailed("batch_fn ended with CancelledError('x')"), ConcurrencyError),
        (WorkerCrashed("worker died: boom"), ConcurrencyError),
    ],
)
def test_batcher_errors_are_redline_errors_and_survive_pickle(
    exc: RedlineError, builtin: type[BaseException]
) -> None:
    assert isinstance(exc, RedlineError)
    assert isinstance(exc, builtin)
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.args == exc.args
