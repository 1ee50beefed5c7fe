"""Run blocking or CPU-bound work off the event loop, in executors someone explicitly owns.

Example::

    async with Offloader(max_threads=8, max_processes=2):
        digest = await run_in_thread(hashlib.sha256, data)   # uses the current Offloader
        primes = await run_in_process(count_primes, 10_000_000)

Outside any ``Offloader``, :func:`run_in_thread` falls back to the loop's default thread
pool, and :func:`run_in_process` refuses (a process pool must have an owner that shuts it
down). A worker process that dies (segfault, ``os._exit``, OOM kill) fails its call with
:class:`~redline.exceptions.WorkerCrashed`; the pool is replaced so later calls work.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from redline.concurrency._private import require_positive_int
from redline.exceptions import Closed, NotStarted, WorkerCrashed

__all__ = ["Offloader", "OffloaderStats", "current_offloader", "run_in_process", "run_in_thread"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_current: ContextVar[Offloader | None] = ContextVar("redline_offloader", default=None)


@dataclass(frozen=True, slots=True)
class OffloaderStats:
    """Counters of an :class:`Offloader`."""

    thread_calls: int
    process_calls: int
    crashes: int
    process_pool_restarts: int


class Offloader:
    """Owns a thread pool and (lazily) a process pool; ``async with`` makes it current.

    ``max_threads``/``max_processes`` default to the executors' own defaults. Processes are
    started with the ``spawn`` method unless ``mp_context`` says otherwise (forking a process
    that runs an event loop and threads is unsafe).
    """

    def __init__(
        self,
        max_threads: int | None = None,
        max_processes: int | None = None,
        *,
        mp_context: BaseContext | None = None,
        name: str = "redline",
    ) -> None:
        if max_threads is not None:
            require_positive_int("max_threads", max_threads)
        if max_processes is not None:
            require_positive_int("max_processes", max_processes)
        self._max_threads = max_threads
        self._max_processes = max_processes
        self._mp_context = mp_context or multiprocessing.get_context("spawn")
        self.name = name
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._closed = False
        self._tokens: list[contextvars.Token[Offloader | None]] = []
        self._thread_calls = 0
        self._process_calls = 0
        self._crashes = 0
        self._restarts = 0

    async def __aenter__(self) -> Self:
        self._check_open()
        self._tokens.append(_current.set(self))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tokens:
            _current.reset(self._tokens.pop())
        await self.aclose()

    async def aclose(self) -> None:
        """Shut both pools down, waiting for running work (off the event loop)."""
        self._closed = True
        threads, processes = self._threads, self._processes
        self._threads = self._processes = None
        for executor in (threads, processes):
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"Offloader {self.name!r} is closed")

    def _thread_pool(self) -> ThreadPoolExecutor:
        self._check_open()
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                self._max_threads, thread_name_prefix=f"{self.name}-offload"
            )
        return self._threads

    def _process_pool(self) -> ProcessPoolExecutor:
        self._check_open()
        if self._processes is None:
            self._processes = ProcessPoolExecutor(self._max_processes, mp_context=self._mp_context)
        return self._processes

    async def run_in_thread(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``func(*args, **kwargs)`` in this Offloader's thread pool (context is copied)."""
        pool = self._thread_pool()
        self._thread_calls += 1
        context = contextvars.copy_context()
        call = functools.partial(context.run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    async def run_in_process(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` in a worker process; *func* and *args* must be picklable."""
        pool = self._process_pool()
        self._process_calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, func, *args)
        except BrokenProcessPool as exc:
            self._crashes += 1
            self._replace_broken(pool)
            name = getattr(func, "__qualname__", repr(func))
            raise WorkerCrashed(
                f"worker process of Offloader {self.name!r} died while running {name}"
            ) from exc

    def _replace_broken(self, pool: ProcessPoolExecutor) -> None:
        """Drop a broken pool once (several failed calls may report the same pool)."""
        if self._processes is pool:
            self._processes = None
            self._restarts += 1
            logger.warning("Offloader %r: process pool broke; starting a new one", self.name)
            pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> OffloaderStats:
        """A frozen snapshot of the counters."""
        return OffloaderStats(
            self._thread_calls, self._process_calls, self._crashes, self._restarts
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Offloader {self.name!r} {state} max_threads={self._max_threads} "
            f"max_processes={self._max_processes} thread_calls={self._thread_calls} "
            f"process_calls={self._process_calls} crashes={self._crashes}>"
        )


def current_offloader() -> Offloader | None:
    """The Offloader made current by the innermost ``async with``, if any."""
    return _current.get()


async def run_in_thread(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking ``func`` in the current Offloader's threads, else the loop's default pool."""
    offloader = _current.get()
    if offloader is not None:
        return await offloader.run_in_thread(func, *args, **kwargs)
    return await asyncio.to_thread(func, *args, **kwargs)


async def run_in_process(func: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound ``func(*args)`` in the current Offloader's process pool."""
    offloader = _current.get()
    if offloader is None:
        raise NotStarted(
            "run_in_process needs a current Offloader: "
            "`async with Offloader(max_processes=...):` owns the process pool"
        )
    return await offloader.run_in_process(func, *args)
