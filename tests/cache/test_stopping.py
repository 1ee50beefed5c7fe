"""stop_task: a close never waits for ever on a task that swallowed its cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redline.cache._stopping import stop_task


async def _swallows_one_cancel(swallowed: asyncio.Event) -> None:
    """Loops like the pub/sub listener after Python 3.11's wait_for returned a result that
    arrived with the cancellation: the first CancelledError is lost, the loop goes on."""
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed.is_set():
                raise
            swallowed.set()


async def test_a_swallowed_cancellation_is_repeated() -> None:
    swallowed = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_swallows_one_cancel(swallowed))
    await asyncio.sleep(0.02)
    # The old close (one cancel, then await) waits for ever here.
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done
    assert swallowed.is_set()
    started = time.monotonic()
    assert await stop_task(task, 5.0)
    assert task.cancelled()
    assert time.monotonic() - started < 2.0


async def test_a_task_that_never_stops_is_given_up_after_the_bound() -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert not await stop_task(task, 0.3)
    assert 0.3 <= time.monotonic() - started < 3.0
    released.set()
    await task


async def test_a_failed_task_counts_as_stopped_and_its_error_is_retrieved() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    assert await stop_task(task, 1.0)
    assert isinstance(task.exception(), ValueError)
