"""Stop a background task within a bound, even when a cancellation is swallowed on the way."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["stop_task"]

_RECANCEL_EVERY = 0.05


async def stop_task(task: asyncio.Task[Any], timeout: float) -> bool:
    """Cancel *task* and wait at most *timeout* seconds for it to end; whether it ended.

    A single ``cancel()`` plus ``await task`` can wait forever: Python 3.11's
    ``asyncio.wait_for`` returns the inner result when the cancellation lands in the same
    loop turn as that result, and the task then carries on (a pub/sub listener loops for
    ever). So the cancellation is repeated until the task is done or the time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.wait({task}, timeout=min(_RECANCEL_EVERY, remaining))
    if not task.done():
        return False
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()  # retrieved, so asyncio does not log "exception never retrieved"
    return True
