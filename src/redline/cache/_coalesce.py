"""Private: batch the single-key reads issued in one event-loop tick into one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["GetCoalescer", "RawReply"]

# (raw value or None, remaining TTL in ms: -1 no expiry, -2 absent; None when not asked for)
RawReply = tuple[bytes | None, int | None]
# A key's reply, or the error its lookup failed with (one node of a cluster down).
BatchFetch = Callable[[list[str], list[str]], Awaitable[dict[str, RawReply | BaseException]]]


class _Pending:
    __slots__ = ("futures", "with_ttl")

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[RawReply]] = []
        self.with_ttl = False


class GetCoalescer:
    """Collect ``get`` requests until the loop runs the flush task, then fetch them at once.

    ``fetch(keys, ttl_keys)`` gets every key of the batch (each once, however many waiters it
    has) and the remaining TTL of ``ttl_keys``; an exception from it fails every waiter, an
    exception as one key's reply fails only that key's waiters.
    Each waiter has its own future, so cancelling one caller leaves the others untouched.
    """

    def __init__(self, fetch: BatchFetch) -> None:
        self._fetch = fetch
        self._pending: dict[str, _Pending] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.requests = 0

    def submit(self, key: str, *, with_ttl: bool = False) -> asyncio.Future[RawReply]:
        """A future of the raw reply for *key*, fetched with the other keys of this tick.

        Must be called from a coroutine running in the loop; await the returned future.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RawReply] = loop.create_future()
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = _Pending()
        entry.futures.append(future)
        if with_ttl:
            entry.with_ttl = True
        if not self._scheduled:
            # The task starts after the callbacks already queued for this tick have run,
            # so every coroutine woken together lands in the same batch.
            self._scheduled = True
            task = loop.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        self._scheduled = False
        self.batches += 1
        keys = list(batch)
        ttl_keys = [key for key, entry in batch.items() if entry.with_ttl]
        try:
            replies = await self._fetch(keys, ttl_keys)
        except asyncio.CancelledError:
            for entry in batch.values():
                for future in entry.futures:
                    future.cancel()
            raise
        except Exception as exc:
            for entry in batch.values():
                for future in entry.futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, entry in batch.items():
            reply = replies.get(key, (None, None))
            for future in entry.futures:
                self.requests += 1
                if future.done():
                    continue
                if isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    @property
    def in_flight(self) -> int:
        """Batches being fetched right now."""
        return len(self._tasks)

    async def aclose(self) -> None:
        """Wait for the batches in flight (their waiters get their replies or errors)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
