"""A Redis lock with a lease, and cross-process single-flight built on it.

:class:`DistributedLock` is ``SET name token NX PX lease``: the token is random per
acquisition, release is compare-and-delete (Lua) so a holder whose lease ran out can
never delete a lock that another process took since, and while it is held a background
task extends the lease (compare-and-``PEXPIRE``) so a slow loader keeps it. A holder that
dies (SIGKILL) stops renewing, the lease runs out, and a waiter takes over.

:func:`load_once` is the cross-process single-flight of cache-aside: the first caller
takes the lock, loads, writes the cache and ``PUBLISH``-es on ``<lock name>:done``;
waiters ``SUBSCRIBE`` to that channel and are woken when the value lands (with a slow
re-check every ``lease / 4`` in case the message was missed), so waiting costs a handful
of commands, not one per poll. Works on Redis Cluster: the lock is one key (one slot),
and a classic ``PUBLISH`` in a cluster reaches subscribers on every node.

With ``breaker=`` (the :class:`~redline.cache.breaker.CircuitBreaker` of the node that owns
the lock key, e.g. ``RedisCache.breaker_for(name)``) every command goes through it: while
Redis is known to be down a lock fails at once with :class:`CacheUnavailable` instead of
each caller waiting out a socket timeout, and a command in flight gives up when it opens.
Failures are logged through an :class:`~redline._events.EventLog` (the first of a run, then
counted), never once per call.

Example::

    lock = DistributedLock(client, "redline:lock:{report:42}", lease=5.0)
    async with lock:
        ...  # only one process at a time runs this
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from redline._events import EventLog
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.exceptions import CacheUnavailable, LockError, LockTimeout

__all__ = ["DistributedLock", "LockStats", "RedisClient", "load_once", "translate_redis_errors"]

logger = logging.getLogger(__name__)

RedisClient: TypeAlias = "Redis | RedisCluster"
T = TypeVar("T")


@functools.cache
def _shared_events() -> EventLog:
    """The event log of the locks given none: one for all, so many locks failing together
    during an outage still log a line per cause."""
    return EventLog(logger, "distributed lock")


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class LockStats:
    """Counters of one :class:`DistributedLock`."""

    acquired: int = 0
    contended: int = 0
    renewals: int = 0
    lost: int = 0
    timeouts: int = 0


class DistributedLock:
    """A lease-based Redis lock (``SET NX PX`` + random token + Lua compare-and-delete).

    *lease* (seconds) bounds how long a dead holder blocks others; *renew_interval*
    (default ``lease / 3``) is how often a live holder extends it; *wait_timeout* is the
    hard cap :meth:`acquire` waits before raising :class:`LockTimeout`. ``breaker`` (see
    the module docstring) guards every command; ``events`` logs failures (default: one log
    shared by every lock).

    Example::

        lock = DistributedLock(client, "lock:{rebuild}", lease=10.0, wait_timeout=30.0)
        async with lock:
            await rebuild()
    """

    def __init__(
        self,
        client: RedisClient,
        name: str,
        *,
        lease: float = 10.0,
        renew_interval: float | None = None,
        wait_timeout: float = 30.0,
        poll_interval: float = 0.05,
        timer: Callable[[], float] = time.monotonic,
        breaker: CircuitBreaker | None = None,
        events: EventLog | None = None,
    ) -> None:
        if not name:
            raise ValueError("name must be a non-empty string")
        if lease <= 0:
            raise ValueError(f"lease must be > 0, got {lease}")
        if renew_interval is not None and not 0 < renew_interval < lease:
            raise ValueError(
                f"renew_interval must be > 0 and < lease ({lease}), got {renew_interval}"
            )
        if wait_timeout < 0:
            raise ValueError(f"wait_timeout must be >= 0, got {wait_timeout}")
        self.client = client
        self.name = name
        self.lease = lease
        self.renew_interval = renew_interval if renew_interval is not None else lease / 3
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.breaker = breaker
        self.events = events if events is not None else _shared_events()
        self._timer = timer
        self._token: str | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._release_script = client.register_script(_RELEASE)
        self._renew_script = client.register_script(_RENEW)
        self._acquired = self._contended = self._renewals = self._lost = self._timeouts = 0

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock (as far as it knows; the lease may be lost)."""
        return self._token is not None

    @property
    def channel(self) -> str:
        """The pub/sub channel :func:`load_once` announces a finished load on."""
        return f"{self.name}:done"

    async def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting; start renewing the lease."""
        if self._token is not None:
            raise LockError(f"lock {self.name!r} is already held by this object")
        token = secrets.token_hex(16)
        taken = await self.command(
            f"cannot take lock {self.name!r}",
            lambda: self.client.set(self.name, token, nx=True, px=int(self.lease * 1000)),
        )
        if not taken:
            self._contended += 1
            return False
        self._token = token
        self._acquired += 1
        self._renewer = asyncio.create_task(self._renew_forever(token), name=f"renew {self.name}")
        return True

    async def acquire(self, timeout: float | None = None) -> None:
        """Wait (polling every *poll_interval*) until the lock is ours or *timeout* passes."""
        timeout = self.wait_timeout if timeout is None else timeout
        deadline = self._timer() + timeout
        while not await self.try_acquire():
            remaining = deadline - self._timer()
            if remaining <= 0:
                self._timeouts += 1
                raise LockTimeout(f"lock {self.name!r} not acquired within {timeout}s")
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def release(self) -> bool:
        """Give the lock back; ``False`` if the lease had run out and someone else has it."""
        token, self._token = self._token, None
        if token is None:
            raise LockError(f"lock {self.name!r} is not held by this object")
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        deleted = await self.command(
            f"cannot release lock {self.name!r}",
            lambda: self._release_script(keys=[self.name], args=[token]),
        )
        if not deleted:
            self._lost += 1
            self.events.failure("release", f"lock {self.name!r} had expired (lease {self.lease}s)")
        return bool(deleted)

    async def command(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """``await op()`` (a command on this lock's client) through ``breaker``; a redis-py
        error, or the breaker open, is :class:`CacheUnavailable` saying *what* failed."""
        try:
            if self.breaker is None:
                return await op()
            return await self.breaker.call(op)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"{what}: {exc}") from exc

    async def _renew_forever(self, token: str) -> None:
        """Extend the lease every ``renew_interval`` while the token is still ours."""
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                renewed = await self.command(
                    f"cannot renew lock {self.name!r}",
                    lambda: self._renew_script(
                        keys=[self.name], args=[token, int(self.lease * 1000)]
                    ),
                )
            except CacheUnavailable as exc:
                self.events.failure("renewal", exc)
                continue
            if not renewed:
                self._lost += 1
                self.events.failure("renewal", f"lock {self.name!r} was lost while held")
                return
            self._renewals += 1

    def stats(self) -> LockStats:
        return LockStats(
            self._acquired, self._contended, self._renewals, self._lost, self._timeouts
        )

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        return f"<DistributedLock {self.name!r} {state} lease={self.lease}s>"

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


@contextlib.contextmanager
def translate_redis_errors(what: str) -> Iterator[None]:
    """Re-raise redis-py errors raised inside the block as :class:`CacheUnavailable`."""
    try:
        yield
    except RedisError as exc:
        raise CacheUnavailable(f"{what}: {exc}") from exc


async def load_once(
    lock: DistributedLock,
    read: Callable[[], Awaitable[Any]],
    load_and_store: Callable[[], Awaitable[Any]],
    *,
    is_hit: Callable[[Any], bool],
) -> Any:
    """Cross-process single-flight: run *load_and_store* in one process, others wait for it.

    *read* looks the value up in the shared cache; *is_hit* says whether what it returned
    is a value. The lock winner re-reads (another process may have just finished), runs
    *load_and_store* and publishes on ``lock.channel``; the others subscribe and re-read
    when woken (or every ``lease / 4``), and take over the load when the lock is free
    again but nothing landed (the holder died or failed). Raises :class:`LockTimeout`
    after ``lock.wait_timeout``.
    """
    deadline = lock._timer() + lock.wait_timeout
    pubsub: Any = None
    try:
        while True:
            if await lock.try_acquire():
                try:
                    value = await read()
                    if is_hit(value):
                        return value
                    value = await load_and_store()
                    await _publish(lock)
                    return value
                finally:
                    try:
                        await lock.release()
                    except CacheUnavailable as exc:  # the lease runs out on its own
                        lock.events.failure("release", exc)
            if pubsub is None:
                pubsub = lock.client.pubsub()
                await lock.command(
                    f"cannot wait for lock {lock.name!r}",
                    functools.partial(pubsub.subscribe, lock.channel),
                )
            # Re-read after subscribing: the value may have landed before we listened.
            value = await read()
            if is_hit(value):
                return value
            remaining = deadline - lock._timer()
            if remaining <= 0:
                lock._timeouts += 1
                raise LockTimeout(f"no value for lock {lock.name!r} within {lock.wait_timeout}s")
            await _wait_for_landing(lock, pubsub, min(lock.lease / 4, remaining))
    except RedisError as exc:
        raise CacheUnavailable(f"single-flight on {lock.name!r} failed: {exc}") from exc
    finally:
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe()
            await pubsub.aclose()


async def _publish(lock: DistributedLock) -> None:
    """Announce a finished load; a lost message only delays waiters to their re-check."""
    try:
        await lock.command(
            f"cannot publish on {lock.channel!r}", lambda: lock.client.publish(lock.channel, "1")
        )
    except CacheUnavailable as exc:
        lock.events.failure("publish", exc)


async def _wait_for_landing(lock: DistributedLock, pubsub: Any, timeout: float) -> None:
    """Wait for the holder's message; give up (:class:`CacheUnavailable`) as soon as the
    lock's breaker opens, since no message will come through a Redis that is down."""
    breaker = lock.breaker
    if breaker is None:
        await _wait_for_message(pubsub, timeout)
        return
    if breaker.state is BreakerState.OPEN:
        raise CacheUnavailable(f"circuit breaker {breaker.name!r} is open")
    async with breaker.guard(awaits_answer=False):  # a quiet channel is not a stall
        await _wait_for_message(pubsub, timeout)


async def _wait_for_message(pubsub: Any, timeout: float) -> None:
    """Block until a message arrives on *pubsub* or *timeout* seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
        if message is not None:
            return
