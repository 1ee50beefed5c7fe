"""Private: the supervisor's background operations (rolling restarts, scaling), run one
after the other in the order they were asked for; none is dropped, and a failure is logged,
since nobody awaits a background task.

    queue = OperationQueue(logger)
    queue.submit(supervisor.rolling_restart())
    queue.submit(supervisor.scale(4))     # runs once the restart has ended
    await queue.cancel()                  # shutdown: the whole queue goes
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine

from redline.exceptions import ClusterError, NginxError

__all__ = ["OperationQueue"]


class OperationQueue:
    """Background operations, one at a time, in order (see the module docstring)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: asyncio.Task[None] | None = None  # each task waits for the one before

    def submit(self, work: Coroutine[None, None, None]) -> None:
        """Run *work* in the background once the operation before it (if any) has ended."""
        previous = self._last
        self._last = asyncio.get_running_loop().create_task(self._after(previous, work))

    async def cancel(self) -> None:
        """Cancel the operation running and every one waiting; return once they are gone."""
        last, self._last = self._last, None
        if last is not None:
            last.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await last

    async def _after(
        self, previous: asyncio.Task[None] | None, work: Coroutine[None, None, None]
    ) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait({previous})
        except asyncio.CancelledError:  # shutdown: the whole queue goes
            if previous is not None:
                previous.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await previous
            work.close()
            raise
        try:
            await work
        except (ClusterError, NginxError, ValueError):
            self._logger.exception("background cluster operation failed")
