"""``amap``: stream ``func`` over a (sync or async) iterable with a bounded window.

Example::

    async for vector in amap(embed_one, read_lines(path), limit=100):
        write(vector)

At most ``limit`` calls are in flight and at most ``limit`` results are held, so memory stays
flat however long the input is. ``ordered=False`` yields results as they complete.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from typing import Any, TypeVar, overload

from redline.concurrency._private import is_async_callable, require_positive_int

__all__ = ["amap"]

T = TypeVar("T")
R = TypeVar("R")


class _Source:
    """Pulls items one at a time from a sync or async iterable."""

    def __init__(self, iterable: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._async: AsyncIterator[Any] | None = None
        self._sync: Iterator[Any] = iter(())
        if isinstance(iterable, AsyncIterable):
            self._async = aiter(iterable)
        elif isinstance(iterable, Iterable):
            self._sync = iter(iterable)
        else:
            raise TypeError(
                f"amap needs an iterable or async iterable, got {type(iterable).__name__}"
            )
        self.exhausted = False

    async def next(self) -> tuple[bool, Any]:
        """``(True, item)``, or ``(False, None)`` once the source is exhausted."""
        try:
            if self._async is not None:
                return True, await anext(self._async)
            return True, next(self._sync)
        except (StopIteration, StopAsyncIteration):
            self.exhausted = True
            return False, None


@overload
def amap(
    func: Callable[[T], Awaitable[R]],
    iterable: Iterable[T] | AsyncIterable[T],
    *,
    limit: int = ...,
    ordered: bool = ...,
) -> AsyncIterator[R]: ...


@overload
def amap(
    func: Callable[[T], R],
    iterable: Iterable[T] | AsyncIterable[T],
    *,
    limit: int = ...,
    ordered: bool = ...,
) -> AsyncIterator[R]: ...


def amap(
    func: Callable[[T], Any],
    iterable: Iterable[T] | AsyncIterable[T],
    *,
    limit: int = 16,
    ordered: bool = True,
) -> AsyncIterator[Any]:
    """Yield ``func(item)`` for each item, with at most *limit* calls in flight.

    *func* may be async or sync (a sync one runs on the event loop: wrap blocking work with
    :func:`redline.concurrency.run_in_thread`). An error cancels the calls still running and is
    raised from the iterator; closing the iterator early (``break``, ``aclose()``) cancels them
    too.
    """
    require_positive_int("limit", limit)
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    source = _Source(iterable)
    return _stream(func, is_async_callable(func), source, limit, ordered)


async def _stream(
    func: Callable[[Any], Any], is_async: bool, source: _Source, limit: int, ordered: bool
) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    # In flight, in input order; finished ones are also pushed to `finished` by a callback,
    # so neither mode ever scans the whole window (O(1) per item, even for 1M items).
    window: deque[asyncio.Future[Any]] = deque()
    in_flight: set[asyncio.Future[Any]] = set()
    finished: deque[asyncio.Future[Any]] = deque()
    wake: asyncio.Future[None] | None = None
    started = 0

    def on_done(future: asyncio.Future[Any]) -> None:
        finished.append(future)
        if wake is not None and not wake.done():
            wake.set_result(None)

    def start(item: Any) -> asyncio.Future[Any]:
        result = func(item)
        if is_async or inspect.isawaitable(result):  # a lambda may wrap an async call
            task: asyncio.Future[Any] = asyncio.ensure_future(result)
            task.add_done_callback(on_done)
            return task
        # A plain sync result: no task needed, it is finished already.
        future = loop.create_future()
        future.set_result(result)
        finished.append(future)
        return future

    try:
        while True:
            while not source.exhausted and len(in_flight) < limit:
                has_item, item = await source.next()
                if has_item:
                    future = start(item)
                    in_flight.add(future)
                    if ordered:
                        window.append(future)
                    started += 1
                    if started % 256 == 0:
                        await asyncio.sleep(0)  # sync func and source never yield: let others run
            if not in_flight:
                return
            if ordered:
                head = window[0]
                while not head.done():
                    _raise_first_error(finished)
                    wake = loop.create_future()
                    await wake
                _raise_first_error(finished)
                window.popleft()
                in_flight.discard(head)
                yield head.result()
            else:
                while not finished:
                    wake = loop.create_future()
                    await wake
                done = finished.popleft()
                in_flight.discard(done)
                yield done.result()
    finally:
        await _cancel_all(in_flight)


def _raise_first_error(finished: deque[asyncio.Future[Any]]) -> None:
    """Raise the error of any finished call (ordered mode must not wait on a slow head)."""
    while finished:
        future = finished.popleft()
        if not future.cancelled() and future.exception() is not None:
            future.result()


async def _cancel_all(futures: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel *futures* and wait until they are all done."""
    remaining = [f for f in futures if not f.done()]
    for future in remaining:
        future.cancel()
    if remaining:
        await asyncio.wait(remaining)
