"""The supervisor's background operations run one at a time, in the order asked for; a
failure is logged, and cancelling drops the running one and every one waiting."""

from __future__ import annotations

import asyncio
import logging

import pytest

from redline.exceptions import ClusterError
from redline.lb._operations import OperationQueue

logger = logging.getLogger("tests.lb.operations")


async def test_operations_run_one_after_the_other_in_order() -> None:
    queue = OperationQueue(logger)
    log: list[str] = []

    async def operation(name: str, seconds: float) -> None:
        log.append(f"{name} start")
        await asyncio.sleep(seconds)
        log.append(f"{name} end")

    queue.submit(operation("restart", 0.05))
    queue.submit(operation("scale", 0.0))
    queue.submit(operation("scale again", 0.0))
    await asyncio.sleep(0.3)
    assert log == [
        "restart start",
        "restart end",
        "scale start",
        "scale end",
        "scale again start",
        "scale again end",
    ]


async def test_a_failed_operation_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = OperationQueue(logger)
    ran = asyncio.Event()

    async def fails() -> None:
        raise ClusterError("replica 3 not ready")

    async def next_one() -> None:
        ran.set()

    queue.submit(fails())
    queue.submit(next_one())
    await asyncio.wait_for(ran.wait(), 5)
    assert "background cluster operation failed" in caplog.text


async def test_cancel_drops_the_running_operation_and_the_waiting_ones() -> None:
    queue = OperationQueue(logger)
    started: list[str] = []

    async def operation(name: str) -> None:
        started.append(name)
        await asyncio.sleep(60)

    queue.submit(operation("first"))
    queue.submit(operation("second"))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(queue.cancel(), 5)
    assert started == ["first"]  # the second never started (and was closed, not leaked)
    await queue.cancel()  # idempotent
