"""MicroBatcher.submit_many: every item queued at once, all or nothing, nothing left queued."""

from __future__ import annotations

import asyncio

import pytest

from redline.concurrency import MicroBatcher
from redline.exceptions import BatchTimeout, Overloaded


async def test_results_come_back_in_order_in_one_batch() -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        return [2 * item for item in items]

    async with MicroBatcher(double, max_batch_size=8) as batcher:
        assert await batcher.submit_many([3, 1, 2], timeout=5) == [6, 2, 4]
    assert calls == [[3, 1, 2]]


async def test_no_task_per_item() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int]:
        await release.wait()
        return items

    async with MicroBatcher(slow, max_batch_size=64) as batcher:
        before = len(asyncio.all_tasks())
        call = asyncio.ensure_future(batcher.submit_many(list(range(32)), timeout=5))
        await asyncio.sleep(0.05)
        # the call itself and the batch running: not 32 more
        assert len(asyncio.all_tasks()) - before <= 2
        release.set()
        assert await call == list(range(32))


async def test_one_failing_batch_fails_the_call_and_takes_the_rest_out_of_the_queue() -> None:
    seen: list[list[int]] = []

    async def fail_on_zero(items: list[int]) -> list[int]:
        seen.append(items)
        await asyncio.sleep(0.05)
        if 0 in items:
            raise ValueError("zero")
        return items

    async with MicroBatcher(fail_on_zero, max_batch_size=2, max_wait=0) as batcher:
        with pytest.raises(ValueError, match="zero"):
            await batcher.submit_many([0, 1, 2, 3, 4, 5], timeout=5)
        assert batcher.stats().queue_depth == 0
        await asyncio.sleep(0.1)
    # the first batch failed; the items still queued then never ran
    assert seen[0] == [0, 1]
    assert [4, 5] not in seen


async def test_deadline_raises_batch_timeout_and_leaves_nothing_queued() -> None:
    async def never(items: list[int]) -> list[int]:
        await asyncio.sleep(10)
        return items

    async with MicroBatcher(never, max_batch_size=1, max_wait=0) as batcher:
        with pytest.raises(BatchTimeout):
            await batcher.submit_many([1, 2, 3], timeout=0.05)
        assert batcher.stats().queue_depth == 0
        await batcher.close(drain=False)


async def test_cancelled_caller_leaves_nothing_queued() -> None:
    release = asyncio.Event()

    async def wait(items: list[int]) -> list[int]:
        await release.wait()
        return items

    async with MicroBatcher(wait, max_batch_size=1, max_wait=0) as batcher:
        call = asyncio.ensure_future(batcher.submit_many([1, 2, 3], timeout=5))
        await asyncio.sleep(0.02)
        assert batcher.stats().queue_depth == 2  # one running, two queued
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert batcher.stats().queue_depth == 0
        release.set()


async def test_a_full_queue_mid_call_raises_overloaded_and_unqueues_the_rest() -> None:
    release = asyncio.Event()

    async def wait(items: list[int]) -> list[int]:
        await release.wait()
        return items

    async with MicroBatcher(wait, max_batch_size=1, max_wait=0, max_queue=3) as batcher:
        with pytest.raises(Overloaded):
            await batcher.submit_many([1, 2, 3, 4, 5], timeout=5)
        assert batcher.stats().queue_depth == 0
        release.set()
        assert await batcher.submit_many([6, 7], timeout=5) == [6, 7]


async def test_dedup_partner_of_a_failed_call_still_gets_its_result() -> None:
    release = asyncio.Event()

    async def wait(items: list[str]) -> list[str]:
        await release.wait()
        return [item.upper() for item in items]

    async with MicroBatcher(wait, max_batch_size=8, dedup=True) as batcher:
        alone = asyncio.ensure_future(batcher.submit("b", timeout=5))
        await asyncio.sleep(0.01)
        with pytest.raises(BatchTimeout):
            await batcher.submit_many(["a", "b"], timeout=0.05)
        release.set()
        assert await alone == "B"
