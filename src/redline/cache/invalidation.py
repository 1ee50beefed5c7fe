"""Invalidation channels: tell every process's L1 that keys changed in the shared L2.

>>> channel = RedisInvalidation("redis://127.0.0.1:6379", channel="myapp:invalidate")
>>> cache = TieredCache(MemoryCache(), RedisCache(...), invalidation=channel)
>>> async with cache:                # starts the subscriber
...     await cache.set("k", 1)     # other processes drop their L1 copy of "k"

A channel carries :class:`InvalidationMessage` values (keys, glob patterns, tags, or a full
flush) tagged with the ``origin`` id of the cache that sent them, so a cache can ignore its
own messages. Subscribers register an async callback with :meth:`Invalidation.subscribe`.

When the channel loses its connection, subscribers receive a ``flush`` message at once
(nothing heard while disconnected can be trusted) and another one when it is back, since
messages published in between were lost. :class:`RedisInvalidation` uses classic Redis
pub/sub; in a Redis Cluster a ``PUBLISH`` reaches every node, so it subscribes to any one
of the candidate nodes and fails over to the next when that one is gone. A link that goes
silent without closing (a frozen server, a dead peer behind a NAT, a half-open TCP
connection) is caught by the heartbeat: the subscriber PINGs after ``ping_interval``
seconds of silence and counts the link as lost when nothing, not even the PONG, has come
back ``2 * ping_interval`` seconds after it last heard from the server.

``publish`` is bounded in time and raises :class:`~redline.exceptions.CacheUnavailable`
when no node took the message; a TieredCache publishes from a background task, so that
never delays a write. Link state changes and failures go through an
:class:`~redline._events.EventLog` (a line per state change, failures counted).
:class:`LocalInvalidation` is the in-process twin (one process, or tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from redline._events import EventLog
from redline.cache._stopping import stop_task
from redline.cache.redis_url import RedisTarget, node_client, parse_redis_url
from redline.exceptions import CacheUnavailable, ConfigError, SerializationError

__all__ = [
    "CHANNEL_ORIGIN",
    "EventSource",
    "Invalidation",
    "InvalidationCallback",
    "InvalidationMessage",
    "LocalInvalidation",
    "RedisInvalidation",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InvalidationMessage:
    """What changed: ``keys``, glob ``patterns``, ``tags``, or everything (``flush``)."""

    origin: str
    keys: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    flush: bool = False

    def encode(self) -> bytes:
        """The wire form (compact JSON)."""
        return orjson.dumps(
            {"o": self.origin, "k": self.keys, "p": self.patterns, "t": self.tags, "f": self.flush}
        )

    @classmethod
    def decode(cls, data: bytes | str) -> InvalidationMessage:
        """Parse the wire form; ``SerializationError`` (a ValueError) if it is not one."""
        try:
            raw = orjson.loads(data)
            message = cls(
                origin=str(raw["o"]),
                keys=tuple(str(k) for k in raw.get("k", ())),
                patterns=tuple(str(p) for p in raw.get("p", ())),
                tags=tuple(str(t) for t in raw.get("t", ())),
                flush=bool(raw.get("f", False)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise SerializationError(f"not an invalidation message: {data!r:.200}") from exc
        return message


InvalidationCallback = Callable[[InvalidationMessage], Awaitable[None]]

#: The origin of the flush messages a channel sends its own subscribers on (re)connection.
CHANNEL_ORIGIN = "<channel>"


@runtime_checkable
class Invalidation(Protocol):
    """A broadcast channel of :class:`InvalidationMessage` between cache instances."""

    @property
    def connected(self) -> bool:
        """Whether messages are being received now."""
        ...

    def subscribe(self, callback: InvalidationCallback) -> None:
        """Call *callback* (in order, one at a time) for every message received."""
        ...

    async def start(self) -> None:
        """Start receiving (idempotent)."""
        ...

    async def publish(self, message: InvalidationMessage) -> None:
        """Send *message* to every subscriber, in every process; bounded in time.

        Raises :class:`~redline.exceptions.CacheUnavailable` when it could not be sent."""
        ...

    async def close(self) -> None:
        """Stop receiving and release connections (idempotent)."""
        ...


@runtime_checkable
class EventSource(Protocol):
    """Something that reports its health through an :class:`~redline._events.EventLog`."""

    @property
    def events(self) -> EventLog:
        """Its event log (state changes and counted failures)."""
        ...


class _Subscribers:
    """Callback fan-out shared by the channel implementations."""

    def __init__(self) -> None:
        self._callbacks: list[InvalidationCallback] = []

    def subscribe(self, callback: InvalidationCallback) -> None:
        self._callbacks.append(callback)

    async def _deliver(self, message: InvalidationMessage) -> None:
        for callback in list(self._callbacks):
            try:
                await callback(message)
            except Exception:
                logger.exception("invalidation callback %r failed", callback)


class LocalInvalidation(_Subscribers):
    """In-process channel: ``publish`` delivers to every subscriber right away.

    >>> channel = LocalInvalidation()
    >>> a = TieredCache(MemoryCache(), shared_l2, invalidation=channel)
    >>> b = TieredCache(MemoryCache(), shared_l2, invalidation=channel)
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self.published = 0

    def __repr__(self) -> str:
        return f"<LocalInvalidation subscribers={len(self._callbacks)} published={self.published}>"

    @property
    def connected(self) -> bool:
        return self._started

    async def start(self) -> None:
        self._started = True

    async def publish(self, message: InvalidationMessage) -> None:
        self.published += 1
        await self._deliver(message)

    async def close(self) -> None:
        self._started = False


def _target_from(nodes: Sequence[tuple[str, int]] | str | RedisTarget) -> RedisTarget:
    """The Redis target of a node list, a Redis URL or a ready :class:`RedisTarget`."""
    if isinstance(nodes, RedisTarget):
        return nodes
    if isinstance(nodes, str):
        return parse_redis_url(nodes)
    found = tuple((str(host), int(port)) for host, port in nodes)
    if not found:
        raise ConfigError("RedisInvalidation needs at least one node")
    return RedisTarget(found, cluster=len(found) > 1)


class RedisInvalidation(_Subscribers):
    """Redis pub/sub channel with failover across candidate nodes and reconnect backoff.

    >>> channel = RedisInvalidation([("127.0.0.1", 7000), ("127.0.0.1", 7001)])

    Parameters: *nodes* (``(host, port)`` pairs, a Redis URL such as ``redis://host:port`` /
    ``rediss+cluster://user:pw@h1:p1,h2:p2`` (see :mod:`redline.cache.redis_url`) or a
    :class:`~redline.cache.redis_url.RedisTarget`), ``channel`` name, ``connect_timeout`` per node,
    ``ping_interval`` (how often an idle subscription checks its link; the link counts as
    lost after ``2 * ping_interval`` without any reply, its PING unanswered for at least
    ``ping_interval``), ``publish_timeout`` (per node
    tried), the reconnect backoff bounds ``backoff_initial`` / ``backoff_max`` (seconds,
    doubling), and ``username`` / ``password`` / ``ssl``, which replace the target's own
    credentials and TLS when given.
    """

    def __init__(
        self,
        nodes: Sequence[tuple[str, int]] | str | RedisTarget,
        channel: str = "redline:invalidate",
        *,
        connect_timeout: float = 1.0,
        ping_interval: float = 1.0,
        publish_timeout: float = 0.5,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool | None = None,
    ) -> None:
        super().__init__()
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("ping_interval", ping_interval),
            ("publish_timeout", publish_timeout),
            ("backoff_initial", backoff_initial),
            ("backoff_max", backoff_max),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        if not channel:
            raise ValueError("channel must not be empty")
        target = _target_from(nodes)
        self._target = replace(
            target,
            username=target.username if username is None else username,
            password=target.password if password is None else password,
            tls=target.tls if ssl is None else ssl,
        )
        self.nodes = list(target.nodes)
        self.channel = channel
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.link_timeout = 2 * ping_interval
        self.publish_timeout = publish_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._first_connect: asyncio.Event | None = None
        self._node_index = 0
        self._publisher: aioredis.Redis | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self.received = 0
        self._events = EventLog(logger, f"invalidation channel {channel!r}")

    def __repr__(self) -> str:
        host, port = self.nodes[self._node_index]
        return (
            f"<RedisInvalidation channel={self.channel!r} node={host}:{port} "
            f"connected={self._connected} received={self.received} reconnects={self.reconnects}>"
        )

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def events(self) -> EventLog:
        """Link state changes (``up`` / ``down``) and counted subscribe failures."""
        return self._events

    async def start(self) -> None:
        """Start the subscriber and wait (up to ``connect_timeout``) for it to subscribe.

        If no node answers yet, it keeps retrying in the background; ``connected`` is False.
        """
        if self._task is not None:
            return
        self._first_connect = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"redline-invalidation:{self.channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_connect.wait(), self.connect_timeout)

    async def publish(self, message: InvalidationMessage) -> None:
        """Send *message* via the current node, failing over to the next ones; each try is
        bounded by ``publish_timeout``. Raises ``CacheUnavailable`` when every try failed."""
        data = message.encode()
        error: BaseException | None = None
        # One more try than there are nodes: a pooled connection that died with a server
        # restart fails once, and the message must still go out on a fresh one.
        for _ in range(len(self.nodes) + 1):
            client = self._publisher_client()
            sent = False
            try:
                await asyncio.wait_for(client.publish(self.channel, data), self.publish_timeout)
                sent = True
                return
            except (RedisError, OSError, TimeoutError) as exc:
                error = exc
                logger.debug("invalidation publish via %s failed: %s", self._node_label(), exc)
                self._node_index = (self._node_index + 1) % len(self.nodes)
            finally:
                if not sent:  # failed or cancelled mid-command: the connection is unusable
                    self._discard_publisher()
        raise CacheUnavailable(
            f"invalidation publish failed on every node of {self.channel!r}: "
            f"{type(error).__name__}: {error}"
        ) from error

    async def close(self) -> None:
        task, self._task = self._task, None
        bound = self.connect_timeout + self.ping_interval
        if task is not None and not await stop_task(task, bound):
            self._events.failure("close", "the subscriber did not stop when cancelled")
        self._connected = False
        self._discard_publisher()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- internals ---------------------------------------------------------------------

    def _node_label(self) -> str:
        host, port = self.nodes[self._node_index]
        return f"{host}:{port}"

    def _client(self) -> aioredis.Redis:
        return node_client(
            self._target,
            self.nodes[self._node_index],
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.connect_timeout + self.ping_interval,
            # No silent reconnect: redis-py would re-subscribe behind our back and the
            # messages published meanwhile would be lost without anyone flushing L1.
            retries=0,
        )

    def _publisher_client(self) -> aioredis.Redis:
        if self._publisher is None:
            self._publisher = self._client()
        return self._publisher

    def _discard_publisher(self) -> None:
        """Forget the publishing client; it is closed in the background (never waited on by
        a publish, which may be being cancelled)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            task = asyncio.get_running_loop().create_task(self._close_quietly(publisher))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_quietly(client: aioredis.Redis) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await client.aclose()

    async def _run(self) -> None:
        backoff = self.backoff_initial
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, CacheUnavailable) as exc:
                self._lost(exc)
            except Exception as exc:
                logger.exception("invalidation subscriber failed")
                self._lost(exc)
            if self._connected:
                backoff = self.backoff_initial
                self._connected = False
                await self._deliver(InvalidationMessage(origin=CHANNEL_ORIGIN, flush=True))
            self.reconnects += 1
            self._node_index = (self._node_index + 1) % len(self.nodes)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    def _lost(self, exc: BaseException) -> None:
        if self._connected:
            self._events.state("down", f"via {self._node_label()}: {exc}")
        else:
            self._events.failure("subscribe", exc)

    async def _listen(self) -> None:
        client = self._client()
        pubsub: Any = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            confirmation = await pubsub.get_message(timeout=self.connect_timeout)
            if confirmation is None or confirmation.get("type") != "subscribe":
                raise CacheUnavailable(f"no SUBSCRIBE confirmation from {self._node_label()}")
            # Anything published before now was missed: drop every L1 copy, then go live.
            await self._deliver(InvalidationMessage(origin=CHANNEL_ORIGIN, flush=True))
            self._connected = True
            self._events.state("up", f"subscribed via {self._node_label()}", level=logging.INFO)
            if self._first_connect is not None:
                self._first_connect.set()
            await self._receive(pubsub)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _receive(self, pubsub: Any) -> None:
        """Deliver messages; PING after ``ping_interval`` of silence, and give the link up
        when nothing at all (not even the PONG) came back within ``link_timeout``."""
        loop = asyncio.get_running_loop()
        last_heard = pinged = loop.time()
        while True:
            message = await pubsub.get_message(timeout=self.ping_interval / 4)
            now = loop.time()
            if message is not None:
                last_heard = now
                if message.get("type") == "message":
                    self.received += 1
                    await self._handle(message["data"])
                continue
            silent = now - last_heard
            # The PING goes out up to a poll late (and later on a busy loop): it is given a
            # full ping_interval to come back, not what is left of link_timeout, or a slow
            # but answering link is counted down.
            if silent >= self.link_timeout and now - pinged >= self.ping_interval:
                raise CacheUnavailable(
                    f"no reply from {self._node_label()} for {silent:.1f} s (PING unanswered)"
                )
            if silent >= self.ping_interval and now - pinged >= self.ping_interval:
                pinged = now
                async with asyncio.timeout(self.ping_interval):
                    await pubsub.ping()

    async def _handle(self, data: bytes | str) -> None:
        try:
            message = InvalidationMessage.decode(data)
        except ValueError as exc:
            logger.warning("ignoring a malformed invalidation message: %s", exc)
            return
        await self._deliver(message)
