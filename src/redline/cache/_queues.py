"""Private: the queues behind :class:`~redline.cache.write_behind.WriteBehind`.

:class:`MemoryQueue` is in-process and bounded: fast, but what it holds is LOST if the
process dies. :class:`RedisStreamQueue` is a Redis Stream read by a consumer group: a write
is acknowledged only after ``XADD`` succeeded, the flusher ``XACK``-s (and ``XDEL``-s) only
after the sink succeeded, and entries a dead consumer had read but not acknowledged are
``XAUTOCLAIM``-ed by a live one after ``claim_idle`` seconds — at-least-once delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from redline.exceptions import Overloaded, SerializationError

if TYPE_CHECKING:  # redis-py is imported by the Redis queue's methods, on first use
    from redline.cache.lock import RedisClient

__all__ = ["Delivery", "MemoryQueue", "RedisStreamQueue", "WriteQueue", "WriteRecord"]


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One change for the sink: *key* now holds *value*.

    ``seq`` orders the changes of the queue (a newer write of a key has a larger ``seq``),
    so a sink can ignore a replayed older record; ``written_at`` is the wall-clock time
    (seconds) of the write.
    """

    key: str
    value: Any
    seq: int
    written_at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record taken from a queue, with the id to acknowledge it by."""

    id: str
    record: WriteRecord


class WriteQueue(Protocol):
    """Where write-behind keeps changes between the write and the sink."""

    async def put(self, key: str, value: Any, *, timeout: float) -> None:
        """Enqueue durably (as durable as the queue is); ``Overloaded`` if full past *timeout*."""

    async def take(self, max_items: int, timeout: float) -> list[Delivery]:
        """Up to *max_items* deliveries, waiting at most *timeout* seconds for the first."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget *deliveries*: the sink has them."""

    def approximate_backlog(self) -> int:
        """Records not yet acknowledged, as last seen (no I/O)."""

    async def backlog(self) -> int:
        """Records not yet acknowledged (enqueued or taken)."""

    async def close(self) -> None:
        """Release the queue's resources."""


def _seq(ms: int, n: int) -> int:
    return ms * 1_000_000 + n


class MemoryQueue:
    """A bounded in-process queue. Lost on crash; full → wait up to the timeout → ``Overloaded``."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[Delivery] = deque()
        self._taken = 0
        self._changed = asyncio.Condition()
        self._ids = itertools.count()

    async def put(self, key: str, value: Any, *, timeout: float) -> None:
        async with self._changed:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands
            # in the turn its timeout fires, and wait_for(..., 0) always times out.
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(
                        lambda: len(self._items) + self._taken < self.maxsize
                    )
            except TimeoutError:
                raise Overloaded(
                    f"write-behind queue is full ({self.maxsize} pending) after waiting {timeout}s"
                ) from None
            n = next(self._ids)
            now = time.time()
            record = WriteRecord(key, value, _seq(int(now * 1000), n % 1_000_000), now)
            self._items.append(Delivery(str(n), record))
            self._changed.notify_all()

    async def take(self, max_items: int, timeout: float) -> list[Delivery]:
        async with self._changed:
            if not self._items and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(lambda: bool(self._items))
            taken = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            self._taken += len(taken)
            return taken

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        async with self._changed:
            self._taken -= len(deliveries)
            self._changed.notify_all()  # room for blocked writers

    def approximate_backlog(self) -> int:
        return len(self._items) + self._taken

    async def backlog(self) -> int:
        return self.approximate_backlog()

    async def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<MemoryQueue queued={len(self._items)} taken={self._taken} maxsize={self.maxsize}>"


# Appends as many of the records (k, v, t triples in ARGV[2:]) as fit under the bound,
# in order, atomically; returns how many went in.
_PUT_IF_ROOM = """
local room = tonumber(ARGV[1]) - redis.call('XLEN', KEYS[1])
local added = 0
for i = 2, #ARGV, 3 do
    if added >= room then break end
    redis.call('XADD', KEYS[1], '*', 'k', ARGV[i], 'v', ARGV[i + 1], 't', ARGV[i + 2])
    added = added + 1
end
return added
"""
_PUT_BATCH = 500  # records per script call


class RedisStreamQueue:
    """A durable queue on one Redis Stream and consumer group (Redis or Redis Cluster).

    *stream* is one key, so one slot in a cluster. *consumer* names this flusher; give each
    live process its own. Entries another consumer read but never acknowledged are claimed
    after *claim_idle* seconds (that consumer is presumed dead). ``max_pending`` bounds the
    stream; a full stream applies backpressure, then raises ``Overloaded``.

    Example::

        queue = RedisStreamQueue(client, "{orders}:wb", "flushers", f"worker-{os.getpid()}")
    """

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        group: str,
        consumer: str,
        *,
        max_pending: int = 100_000,
        claim_idle: float = 30.0,
        block: float = 0.2,
        poll_interval: float = 0.05,
    ) -> None:
        if not stream or not group or not consumer:
            raise ValueError("stream, group and consumer must be non-empty strings")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if claim_idle <= 0:
            raise ValueError(f"claim_idle must be > 0, got {claim_idle}")
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.max_pending = max_pending
        self.claim_idle = claim_idle
        self.block = block
        self.poll_interval = poll_interval
        self._put_script = client.register_script(_PUT_IF_ROOM)
        self._appends: list[tuple[str, bytes, str, asyncio.Future[bool]]] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._group_ready = False
        # Where the next read of this consumer's own pending entries starts (None: none are
        # left to read): "0" at first, for what a restarted process had read, and again after
        # a read that failed (see ``take``).
        self._pending_from: str | None = "0"
        self._next_claim = 0.0
        self._backlog = 0

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        from redis.exceptions import ResponseError

        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def put(self, key: str, value: Any, *, timeout: float) -> None:
        try:
            payload = orjson.dumps(value)
        except TypeError as exc:
            raise SerializationError(f"write-behind value of {key!r} is not JSON: {exc}") from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self._append(key, payload):
            if loop.time() >= deadline:
                raise Overloaded(
                    f"write-behind stream {self.stream!r} is full "
                    f"({self.max_pending} pending) after waiting {timeout}s"
                )
            await asyncio.sleep(min(self.poll_interval, max(deadline - loop.time(), 0)))
        self._backlog += 1

    async def _append(self, key: str, payload: bytes) -> bool:
        """Queue one record for the next append round trip; ``False`` if the stream was full.

        The puts issued in one event-loop tick go to Redis together, in one script call.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._appends.append((key, payload, repr(time.time()), future))
        if len(self._appends) == 1:
            task = asyncio.create_task(self._send_appends())
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        return await future

    async def _send_appends(self) -> None:
        batch, self._appends = self._appends[:_PUT_BATCH], self._appends[_PUT_BATCH:]
        if self._appends:  # more than one script call's worth: the rest goes next
            task = asyncio.create_task(self._send_appends())
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        args: list[Any] = [self.max_pending]
        for key, payload, stamp, _ in batch:
            args += [key, payload, stamp]
        try:
            with translate_redis_errors(f"cannot append to stream {self.stream!r}"):
                added = int(await self._put_script(keys=[self.stream], args=args))
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for index, (*_, future) in enumerate(batch):
            if not future.done():
                future.set_result(index < added)

    async def take(self, max_items: int, timeout: float) -> list[Delivery]:
        """Up to *max_items* entries: this consumer's own pending ones first (see below),
        then others' idle for ``claim_idle``, then new ones (waiting up to *timeout*).

        A read that fails here may still have run in Redis: one sent to a frozen Redis times
        out, and Redis runs it when it thaws; a cancelled one may have been answered. What it
        took is then pending for this consumer with the answer lost, so after any failure
        the next take reads this consumer's pending entries again (entries already held
        come back too: delivery is at least once)."""
        from redis.exceptions import ResponseError

        try:
            with translate_redis_errors(f"cannot read stream {self.stream!r}"):
                try:
                    return await self._take(max_items, timeout)
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    # The stream or its group is gone (a Redis restarted empty): make them again.
                    self._group_ready = False
                    return await self._take(max_items, timeout)
        except BaseException:
            self._pending_from = "0"
            raise

    async def _take(self, max_items: int, timeout: float) -> list[Delivery]:
        await self._ensure_group()
        while self._pending_from is not None:
            # Entries this consumer name read and never acknowledged (before a restart, or
            # by a read whose answer was lost), in order, from where the last such read ended.
            got, last = await self._read_from(self._pending_from, max_items, None)
            self._pending_from = last
            if got:
                return got
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self.claim_idle / 2
            claimed = await self._claim(max_items)
            if claimed:
                return claimed
        # BLOCK 0 would mean "forever": below a millisecond, don't block at all.
        block_ms = int(min(timeout, self.block) * 1000)
        got, _ = await self._read_from(">", max_items, block_ms if block_ms >= 1 else None)
        self._backlog = int(await self.client.xlen(self.stream))
        return got

    async def _read_from(
        self, start: str, count: int, block_ms: int | None
    ) -> tuple[list[Delivery], str | None]:
        """The entries ``XREADGROUP`` gives from *start*, and the id of the last one (None
        when there were none)."""
        reply: Any = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        if not reply:
            return [], None
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        if not entries:
            return [], None
        return await self._decode(entries), _text(entries[-1][0])

    async def _claim(self, count: int) -> list[Delivery]:
        reply: Any = await self.client.xautoclaim(
            self.stream, self.group, self.consumer, int(self.claim_idle * 1000), "0-0", count=count
        )
        return await self._decode(reply[1])

    async def _decode(self, entries: list[Any]) -> list[Delivery]:
        deliveries: list[Delivery] = []
        gone: list[str] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if not fields:  # deleted while pending: nothing to deliver, just acknowledge
                gone.append(entry_id)
                continue
            ms, _, n = entry_id.partition("-")
            fields = {_text(k): v for k, v in fields.items()}
            record = WriteRecord(
                key=_text(fields["k"]),
                value=orjson.loads(fields["v"]),
                seq=_seq(int(ms), int(n)),
                written_at=float(_text(fields["t"])),
            )
            deliveries.append(Delivery(entry_id, record))
        if gone:
            await self.client.xack(self.stream, self.group, *gone)
        return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.id for d in deliveries]
        with translate_redis_errors(f"cannot acknowledge on stream {self.stream!r}"):
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()
        self._backlog = max(0, self._backlog - len(ids))

    def approximate_backlog(self) -> int:
        return self._backlog

    async def backlog(self) -> int:
        with translate_redis_errors(f"cannot read stream {self.stream!r}"):
            self._backlog = int(await self.client.xlen(self.stream))
        return self._backlog

    async def close(self) -> None:
        """The client belongs to the caller; nothing to release."""

    def __repr__(self) -> str:
        return (
            f"<RedisStreamQueue {self.stream!r} group={self.group!r} "
            f"consumer={self.consumer!r} backlog~{self._backlog}>"
        )


def translate_redis_errors(what: str) -> contextlib.AbstractContextManager[None]:
    """:func:`redline.cache.lock.translate_redis_errors`, imported when first used: a process
    whose queue is in memory never imports redis-py for it."""
    from redline.cache.lock import translate_redis_errors as translate

    return translate(what)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
