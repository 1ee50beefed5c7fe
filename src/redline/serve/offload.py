"""Where a large request's CPU work runs: a few threads of lower OS priority than the event loop.

Decoding a 2 MB body, tokenising 256 long inputs or encoding 256 vectors takes milliseconds to
seconds of CPU. On the event loop that would stall every other request; in a thread at the
loop's own priority it still competes with the loop for the cores. The threads here are
``nice``-d (Linux: niceness is per thread), so the loop, which needs little CPU but needs it
at once, runs first whenever both want a core; the work still gets every idle cycle.

Example::

    offload = Offload(threads=2)
    counts = await offload.run(model.count_tokens, texts)
    offload.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["OFFLOAD_NICENESS", "Offload"]

P = ParamSpec("P")
R = TypeVar("R")

#: How much lower than the server's own priority the offload threads run (0-19).
OFFLOAD_NICENESS = 10


class Offload:
    """A thread pool of *threads* threads at *niceness* below the calling process."""

    def __init__(self, threads: int = 2, *, niceness: int = OFFLOAD_NICENESS) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not 0 <= niceness <= 19:
            raise ValueError(f"niceness must be between 0 and 19, got {niceness}")
        self.threads = threads
        self.niceness = niceness
        self._pool = ThreadPoolExecutor(
            threads, thread_name_prefix="redline-offload", initializer=self._lower_priority
        )

    def _lower_priority(self) -> None:
        """Runs first in each pool thread: raise this thread's niceness (Linux; else no-op)."""
        if self.niceness and hasattr(os, "setpriority"):
            # Best effort: a platform or sandbox that refuses leaves the thread as it is.
            with contextlib.suppress(OSError):
                thread = threading.get_native_id()  # the thread id on Linux
                current = os.getpriority(os.PRIO_PROCESS, thread)
                os.setpriority(os.PRIO_PROCESS, thread, min(19, current + self.niceness))

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)`` in a pool thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    def close(self) -> None:
        """Stop the threads once their current work is done (queued work is dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"Offload(threads={self.threads}, niceness={self.niceness})"
