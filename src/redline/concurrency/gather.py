"""``gather_limited``: ``asyncio.gather`` with at most ``limit`` awaitables in flight.

Example::

    pages = await gather_limited((lambda u=u: fetch(u) for u in urls), limit=10)

Give zero-argument async callables (or a generator of coroutines) to create work lazily:
the next one is pulled only when a slot frees, so a million-item generator stays cheap.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, Literal, TypeVar, overload

from redline.concurrency._private import require_positive_int

__all__ = ["gather_limited"]

T = TypeVar("T")

AwaitableOrFactory = Awaitable[T] | Callable[[], Awaitable[T]]


def _start(work: AwaitableOrFactory[Any]) -> asyncio.Future[Any]:
    """Turn one awaitable or zero-argument async callable into a running task/future."""
    if inspect.isawaitable(work):
        return asyncio.ensure_future(work)
    if callable(work):
        produced = work()
        if not inspect.isawaitable(produced):
            raise TypeError(
                f"gather_limited: callable {work!r} returned {type(produced).__name__}, "
                "not an awaitable"
            )
        return asyncio.ensure_future(produced)
    raise TypeError(
        f"gather_limited takes awaitables or zero-argument async callables, "
        f"got {type(work).__name__}"
    )


@overload
async def gather_limited(
    aws: Iterable[AwaitableOrFactory[T]],
    *,
    limit: int,
    return_exceptions: Literal[False] = False,
) -> list[T]: ...


@overload
async def gather_limited(
    aws: Iterable[AwaitableOrFactory[T]],
    *,
    limit: int,
    return_exceptions: Literal[True],
) -> list[T | BaseException]: ...


async def gather_limited(
    aws: Iterable[AwaitableOrFactory[T]],
    *,
    limit: int,
    return_exceptions: bool = False,
) -> list[T] | list[T | BaseException]:
    """Run *aws* with at most *limit* in flight and return their results in input order.

    Without ``return_exceptions`` the first error cancels everything still running and is
    raised; with it, exceptions take their item's place in the result list. Cancelling the
    caller cancels every child.
    """
    require_positive_int("limit", limit)
    loop = asyncio.get_running_loop()
    iterator = iter(aws)
    results: dict[int, Any] = {}
    index_of: dict[asyncio.Future[Any], int] = {}
    pending: set[asyncio.Future[Any]] = set()
    # Completions are pushed here by a callback: O(1) per child, where asyncio.wait would
    # re-register on every pending child at each wake-up.
    finished: deque[asyncio.Future[Any]] = deque()
    wake: asyncio.Future[None] | None = None
    count = 0
    exhausted = False

    def on_done(future: asyncio.Future[Any]) -> None:
        finished.append(future)
        if wake is not None and not wake.done():
            wake.set_result(None)

    try:
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    work = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                future = _start(work)
                index_of[future] = count
                pending.add(future)
                future.add_done_callback(on_done)
                count += 1
            if not pending:
                break
            while not finished:
                wake = loop.create_future()
                await wake
            while finished:
                future = finished.popleft()
                pending.discard(future)
                index = index_of.pop(future)
                error: BaseException | None = (
                    asyncio.CancelledError() if future.cancelled() else future.exception()
                )
                if error is None:
                    results[index] = future.result()
                elif return_exceptions:
                    results[index] = error
                else:
                    raise error
    finally:
        if not exhausted and isinstance(aws, Collection):
            # Close coroutines handed over up front that will now never run (no warnings).
            for leftover in iterator:
                if inspect.iscoroutine(leftover):
                    leftover.close()
        if pending:
            for future in pending:
                future.cancel()
            # Wait for the children to finish cancelling so none outlives the call.
            await asyncio.wait(pending)
    return [results[i] for i in range(count)]
