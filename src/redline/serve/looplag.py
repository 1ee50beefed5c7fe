"""Event-loop lag: how late the loop runs a callback it was asked to run on time.

A task sleeps *interval* seconds, over and over, and measures with an injected clock how much
later than asked it woke up; each sample goes to ``observe`` (the server's
``redline_event_loop_lag_seconds`` histogram). Anything that holds the loop (a CPU-heavy
request handled inline, a long call holding the GIL in another thread) shows up as lag.

Example::

    monitor = LoopLagMonitor(metrics.loop_lag.observe, interval=0.01)
    monitor.start()
    ...
    await monitor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_LAG_INTERVAL", "LoopLagMonitor"]

#: Seconds between two samples: 100 wake-ups a second cost about 0.1% of one core.
DEFAULT_LAG_INTERVAL = 0.01


class LoopLagMonitor:
    """Samples the running loop's lag every *interval* seconds into *observe*.

    *clock* is the time source (``time.perf_counter``); *sleep* is how the task waits
    (``asyncio.sleep``): tests inject both to see exact samples.
    """

    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval: float = DEFAULT_LAG_INTERVAL,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self._observe = observe
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.samples = 0
        self.last_lag = 0.0

    def start(self) -> None:
        """Start sampling on the running loop (a second call does nothing)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="redline-loop-lag")

    async def _run(self) -> None:
        while True:
            before = self._clock()
            await self._sleep(self.interval)
            self.last_lag = max(0.0, self._clock() - before - self.interval)
            self.samples += 1
            self._observe(self.last_lag)

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __repr__(self) -> str:
        running = self._task is not None and not self._task.done()
        return (
            f"LoopLagMonitor(interval={self.interval}, running={running}, "
            f"samples={self.samples}, last_lag={self.last_lag:.6f})"
        )
