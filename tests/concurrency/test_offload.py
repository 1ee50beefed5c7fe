"""Offloader: thread and process pools with explicit ownership, crash recovery."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading

import pytest

from redline.concurrency import (
    Offloader,
    OffloaderStats,
    current_offloader,
    run_in_process,
    run_in_thread,
)
from redline.exceptions import Closed, NotStarted, WorkerCrashed
from tests.concurrency import _workers

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def test_run_in_thread_uses_the_current_offloader_threads() -> None:
    def where(x: int, *, y: int) -> tuple[str, int]:
        return threading.current_thread().name, x + y

    async with Offloader(max_threads=2, name="t") as offloader:
        assert current_offloader() is offloader
        name, value = await run_in_thread(where, 1, y=2)
    assert name.startswith("t-offload")
    assert value == 3
    assert current_offloader() is None
    assert offloader.stats().thread_calls == 1


async def test_run_in_thread_without_offloader_uses_default_pool() -> None:
    loop_thread = threading.get_ident()
    assert await run_in_thread(threading.get_ident) != loop_thread


async def test_run_in_thread_copies_context() -> None:
    request_id.set("req-42")
    async with Offloader(max_threads=1):
        assert await run_in_thread(request_id.get) == "req-42"


async def test_thread_pool_does_not_block_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    async with Offloader(max_threads=1):
        tick_task = asyncio.create_task(ticker())
        digest = await run_in_thread(_workers.hash_rounds, b"x", 200_000)
        tick_task.cancel()
    assert digest == _workers.hash_rounds(b"x", 200_000)
    assert ticks > 3


async def test_process_work_runs_in_another_process_and_errors_propagate() -> None:
    async with Offloader(max_processes=1) as offloader:
        child = await run_in_process(_workers.pid)
        assert await run_in_process(_workers.hash_rounds, b"abc", 1000) == _workers.hash_rounds(
            b"abc", 1000
        )
        with pytest.raises(ValueError, match=r"^plain failure$"):
            await offloader.run_in_process(_workers.fail, "plain failure")
    assert child != os.getpid()


async def test_child_crash_raises_worker_crashed_and_pool_recovers() -> None:
    async with Offloader(max_processes=1, name="crashy") as offloader:
        first = await run_in_process(_workers.pid)
        with pytest.raises(WorkerCrashed, match="'crashy' died while running die") as info:
            await run_in_process(_workers.die, 3)
        assert info.value.__cause__ is not None
        second = await run_in_process(_workers.pid)
        stats = offloader.stats()
    assert second != first  # a fresh pool with a fresh worker
    assert isinstance(stats, OffloaderStats)
    assert stats.crashes == 1
    assert stats.process_pool_restarts == 1
    assert stats.process_calls == 3


async def test_run_in_process_without_offloader_is_refused() -> None:
    with pytest.raises(NotStarted, match=r"^run_in_process needs a current Offloader"):
        await run_in_process(_workers.pid)


async def test_closed_offloader_refuses_work() -> None:
    offloader = Offloader(max_threads=1, name="done")
    async with offloader:
        pass
    with pytest.raises(Closed, match=r"^Offloader 'done' is closed$"):
        await offloader.run_in_thread(threading.get_ident)
    assert "closed" in repr(offloader)


def test_bad_pool_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^max_threads must be >= 1, got 0$"):
        Offloader(max_threads=0)
    with pytest.raises(ValueError, match=r"^max_processes must be >= 1, got -1$"):
        Offloader(max_processes=-1)
