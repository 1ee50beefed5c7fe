"""The Redis tier: one :class:`RedisCache` for standalone Redis and Redis Cluster.

Single-key reads issued in the same event-loop tick are coalesced into one ``MGET``
(standalone) or one pipeline per node (Cluster); every command goes through a
:class:`~redline.cache.breaker.CircuitBreaker` — one per Cluster master, so a dead master
fails only the keys it owns — and redis-py errors are translated into
:class:`~redline.exceptions.CacheUnavailable` / :class:`~redline.exceptions.CacheError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from redline.cache._coalesce import GetCoalescer, RawReply
from redline.cache._redis_errors import (
    ANSWERED_ERRORS,
    TRANSLATED_ERRORS,
    UNAVAILABLE_ERRORS,
    translate_redis_error,
)
from redline.cache._routes import Route, Routes
from redline.cache.base import MISSING, CacheStats, TierStats
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.exceptions import CacheError, CacheUnavailable, WrongValueType

if TYPE_CHECKING:
    from redline.cache.serialization import Serializer

__all__ = ["RedisCache", "translate_redis_error"]  # the latter re-exported for callers

# Tag records are sorted sets: member = a tagged Redis key, score = when it was tagged, a
# stamp that grows on each node (the server clock in microseconds, or one more than the
# highest stamp of the set when that is later), so tagging again after an invalidation read
# the set always scores above what that invalidation read.
#
# Record ARGV[2] in KEYS[1] with a new stamp, and keep the set until its longest-lived member
# expires: a new set takes the entry's TTL (ARGV[1] ms), a set with one lives on to the later
# of the two, and an entry that never expires (ARGV[1] = -1) makes the set persistent.
_TAG = """
local now = redis.call('TIME')
local stamp = tonumber(now[1]) * 1000000 + tonumber(now[2])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= stamp then
    stamp = tonumber(top[2]) + 1
end
local existed = #top > 0
redis.call('ZADD', KEYS[1], string.format('%.0f', stamp), ARGV[2])
local ttl = tonumber(ARGV[1])
if ttl < 0 then
    redis.call('PERSIST', KEYS[1])
elseif not existed then
    redis.call('PEXPIRE', KEYS[1], ttl)
else
    local left = redis.call('PTTL', KEYS[1])
    if left >= 0 and left < ttl then
        redis.call('PEXPIRE', KEYS[1], ttl)
    end
end
return 1
"""

# Forget the members of KEYS[1] stamped at or before ARGV[1] (the highest stamp an
# invalidation read), except ARGV[2..] (members whose value it could not delete). Members
# tagged again since keep their record: their stamp is higher.
_FORGET = """
if #ARGV == 1 then
    return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
local keep = {}
for i = 2, #ARGV do
    keep[ARGV[i]] = true
end
local removed = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
    if not keep[member] then
        removed = removed + redis.call('ZREM', KEYS[1], member)
    end
end
return removed
"""

logger = logging.getLogger(__name__)
# Commands in one pipeline beyond which it may rightly take long (not a stall).
_BULK = 256
T = TypeVar("T")
RedisClient = Redis | RedisCluster


def _escape_glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _encode_int(value: Any) -> bytes | None:
    # ints are stored as plain decimal so INCRBY works on them (bool is not an int here)
    return str(value).encode() if type(value) is int else None


def _is_int(raw: bytes) -> bool:
    digits = raw[1:] if raw[:1] == b"-" else raw
    return 0 < len(digits) <= 20 and digits.isdigit()


class RedisCache:
    """A cache tier on Redis or Redis Cluster (redis-py asyncio), keys under ``"{namespace}:"``.

    Example::

        async with RedisCache.from_url("redis://127.0.0.1:6379/0", namespace="app") as cache:
            await cache.set("user:1", {"name": "Ada"}, ttl=60)
            await cache.get("user:1")        # {'name': 'Ada'}
            value, ttl = await cache.get_with_ttl("user:1")

    ``serializer`` defaults to :class:`~redline.cache.serialization.JsonSerializer`; ints are
    stored as plain decimal so ``incr`` works on them. A stored value that fails to decode is
    logged, counted in ``stats().errors`` and read as a miss. Every command goes through
    ``breaker``; when Redis is down calls raise :class:`CacheUnavailable` (at once while the
    breaker is open, and calls already waiting give up when it opens). ``ttl_jitter``
    shortens every TTL by a random fraction up to that value, so keys written together do
    not all expire together.

    On a Cluster, ``breaker`` is the model of one breaker per master (:meth:`breakers`),
    found from redis-py's slot table: a master that dies fails only the keys it owns (a
    coalesced batch fails only those keys, ``get_many`` leaves them out), and once a replica
    has taken over (the slot table is refreshed in the background while a master fails)
    its keys route to the new master and its own breaker. Breaker state changes are logged
    once each and failures counted (``stats()`` tier ``events``). A client you pass in
    should not retry on its own (``RedisCluster(retry=Retry(NoBackoff(), 0))``, as
    :meth:`from_cluster_nodes` builds it): redis-py's Cluster retries close every node's
    connections.

    Tags live in one Redis sorted set per tag (``"{namespace}#tagged:{tag}"``, outside the
    key space that patterns match), each key scored with when it was tagged; a tagged
    ``set`` writes the value first and records the tags after it. ``invalidate_tags`` reads
    the record, deletes its keys, then drops only what it read (see there for what that
    guarantees against concurrent writes and invalidations). A tag set
    lives as long as its longest-lived member: each tagged ``set`` extends its expiry to the
    new entry's TTL (never shortens it), and an entry without a TTL makes it persistent.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        namespace: str = "redline",
        serializer: Serializer | None = None,
        default_ttl: float | None = None,
        ttl_jitter: float = 0.0,
        breaker: CircuitBreaker | None = None,
        max_in_flight: int | None = None,
        name: str = "redis",
        owns_client: bool = False,
    ) -> None:
        if not isinstance(client, Redis | RedisCluster):
            raise TypeError(
                f"client must be a redis.asyncio Redis or RedisCluster, got {type(client).__name__}"
            )
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("client must be created with decode_responses=False")
        if not namespace or not isinstance(namespace, str):
            raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
        if default_ttl is not None and not default_ttl > 0:
            raise ValueError(f"default_ttl must be > 0 or None, got {default_ttl}")
        if not 0.0 <= ttl_jitter < 1.0:
            raise ValueError(f"ttl_jitter must be in [0, 1), got {ttl_jitter}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1 or None, got {max_in_flight}")
        if serializer is None:
            from redline.cache.serialization import JsonSerializer

            serializer = JsonSerializer()
        self.client: RedisClient = client
        self.namespace = namespace
        self.name = name
        self.serializer = serializer
        self.default_ttl = default_ttl
        self.ttl_jitter = ttl_jitter
        self.breaker = breaker or CircuitBreaker(
            failure_threshold=3, reset_timeout=1.0, stall_timeout=0.25, name=name
        )
        self.is_cluster = isinstance(client, RedisCluster)
        self._prefix = namespace + ":"
        self._tag_prefix = namespace + "#tagged:"
        self._owns_client = owns_client
        self._routes = Routes(
            client, self.breaker, max_in_flight=max_in_flight, name=name, logger=logger
        )
        self._coalescer = GetCoalescer(self._fetch_batch)
        self._hits = self._misses = self._sets = self._deletes = self._errors = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_connections: int | None = None,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        namespace: str = "redline",
        serializer: Serializer | None = None,
        default_ttl: float | None = None,
        ttl_jitter: float = 0.0,
        breaker: CircuitBreaker | None = None,
        name: str = "redis",
    ) -> RedisCache:
        """A cache on the Redis or Redis Cluster a URL names (``redis://host:port/db``,
        ``rediss://``, ``redis+cluster://h1:p1,h2:p2``...; see :mod:`redline.cache.redis_url`);
        no I/O yet. Keyword timeouts and ``max_connections`` replace the URL's (default
        0.5 s, 0.5 s, 64); cache options belong to ``cache_from_url``, not this URL."""
        from dataclasses import replace

        from redline.cache.redis_url import parse_redis_url, redis_client
        from redline.exceptions import ConfigError

        target = parse_redis_url(url)
        if target.options or target.tiered:
            extra = sorted(target.options) or ["tiered"]
            raise ConfigError(
                f"RedisCache.from_url takes only connection options, got {extra[0]!r}; "
                f"use cache_from_url for cache options"
            )
        given: dict[str, Any] = {
            "max_connections": max_connections,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
        }
        target = replace(target, **{k: v for k, v in given.items() if v is not None})
        return cls(
            redis_client(target),
            namespace=namespace,
            serializer=serializer,
            default_ttl=default_ttl,
            ttl_jitter=ttl_jitter,
            breaker=breaker,
            max_in_flight=target.max_connections,
            name=name,
            owns_client=True,
        )

    @classmethod
    def from_cluster_nodes(
        cls,
        nodes: Sequence[tuple[str, int]],
        *,
        max_connections: int = 64,
        socket_timeout: float = 0.5,
        socket_connect_timeout: float = 0.5,
        ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        namespace: str = "redline",
        serializer: Serializer | None = None,
        default_ttl: float | None = None,
        ttl_jitter: float = 0.0,
        breaker: CircuitBreaker | None = None,
        name: str = "redis",
    ) -> RedisCache:
        """A cache on a Redis Cluster reached through any of *nodes* ``[(host, port), ...]``
        (a retry-free ``RedisCluster`` from :func:`~redline.cache.redis_url.redis_client`)."""
        if not nodes:
            raise ValueError("nodes must name at least one (host, port)")
        from redline.cache.redis_url import RedisTarget, redis_client

        target = RedisTarget(
            tuple((host, port) for host, port in nodes),
            cluster=True,
            tls=ssl,
            username=username,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max_connections,
        )
        return cls(
            redis_client(target),
            namespace=namespace,
            serializer=serializer,
            default_ttl=default_ttl,
            ttl_jitter=ttl_jitter,
            breaker=breaker,
            max_in_flight=max_connections,
            name=name,
            owns_client=True,
        )

    # -- helpers -----------------------------------------------------------------------

    def full_key(self, key: str) -> str:
        """The Redis key for cache key *key* (``"{namespace}:{key}"``)."""
        return self._prefix + key

    def tag_key(self, tag: str) -> str:
        """The Redis sorted set that records the keys carrying *tag*."""
        return self._tag_prefix + tag

    def _ttl_ms(self, ttl: float | None) -> int | None:
        if ttl is None:
            ttl = self.default_ttl
            if ttl is None:
                return None
        elif not ttl > 0:
            raise ValueError(f"ttl must be > 0 or None, got {ttl}")
        if self.ttl_jitter:
            ttl *= 1.0 - self.ttl_jitter * random.random()
        return max(1, int(ttl * 1000))

    def _encode(self, value: Any) -> bytes:
        raw = _encode_int(value)
        return raw if raw is not None else self.serializer.dumps(value)

    def _decode(self, key: str, raw: bytes | None) -> Any:
        if raw is None:
            return MISSING
        if _is_int(raw):
            return int(raw)
        try:
            return self.serializer.loads(raw)
        except Exception as exc:  # garbage or forged data is a miss, never raised or run
            self._errors += 1
            logger.warning(
                "cache %s: undecodable value at %r read as a miss: %s", self.name, key, exc
            )
            return MISSING

    async def _route(self, full_key: str) -> Route:
        """The route of the node that owns *full_key* (learning the Cluster's slots first)."""
        try:
            if not self._routes.ready:
                await self._routes.initialize()
            return self._routes.for_key(full_key)
        except TRANSLATED_ERRORS as exc:
            self._errors += 1
            raise translate_redis_error(exc, "routing") from exc

    def _allow(self, route: Route) -> None:
        try:
            route.breaker.allow()
        except CacheUnavailable:
            self._routes.suspect()  # its node may have been replaced
            raise

    async def _run(
        self,
        route: Route,
        what: str,
        op: Callable[[], Awaitable[T]],
        *,
        check: bool = True,
        bulk: bool = False,
    ) -> T:
        """``await op()`` through *route*'s breaker and in-flight limit, errors translated.

        A *bulk* call (a scan, a pipeline of many commands) may rightly take long: it still
        gives up when the breaker opens, but its wait is never taken for a stall.
        """
        breaker = route.breaker
        if check:
            self._allow(route)
        elif breaker.state is BreakerState.OPEN:  # opened since the call asked
            raise CacheUnavailable(f"circuit breaker {breaker.name!r} is open")
        guard = breaker.guard(awaits_answer=not bulk)
        try:
            async with guard:
                if not self._routes.ready:
                    await self._routes.initialize()
                if route.limit is None:
                    result = await op()
                else:
                    async with route.limit:
                        result = await op()
        except CacheUnavailable:
            if not guard.aborted:
                raise
            self._errors += 1  # the breaker opened while this call waited
            raise
        except TRANSLATED_ERRORS as exc:
            self._fail(route, exc)
            raise translate_redis_error(exc, what) from exc
        breaker.record_success()
        return result

    def _fail(self, route: Route, exc: BaseException) -> None:
        self._errors += 1
        if isinstance(exc, ANSWERED_ERRORS):
            # The node answered (CLUSTERDOWN while a failover runs, TRYAGAIN): it is up,
            # the slot table may be stale.
            route.breaker.record_success()
            self._routes.suspect()
        elif isinstance(exc, UNAVAILABLE_ERRORS):
            route.breaker.record_failure(exc)
            self._routes.suspect()
        else:
            route.breaker.record_success()  # it answered

    async def _keyed(self, what: str, full_key: str, command: Callable[[Any], Any]) -> Any:
        """One command on *full_key*'s node: ``command(client)`` on standalone Redis, one
        queued in a pipeline on a Cluster (a pipeline never closes the other nodes'
        connections when this one fails)."""
        route = self._routes.single or await self._route(full_key)
        if not self.is_cluster:
            return await self._run(route, what, lambda: command(self.client))

        async def one() -> Any:
            pipe = self.client.pipeline(transaction=False)
            command(pipe)
            (result,) = await pipe.execute()
            return result

        return await self._run(route, what, one)

    async def _fan_out(
        self,
        what: str,
        full_keys: Sequence[str],
        queue: Callable[[Any, int], Any],
        *,
        check: bool = True,
    ) -> list[Any]:
        """Command *i* (``queue(pipe, i)``, routed by ``full_keys[i]``) in one pipeline per
        node, the nodes concurrently; per command its reply, or the :class:`CacheError` its
        node failed with."""
        results: list[Any] = [None] * len(full_keys)
        if not full_keys:
            return results
        if self._routes.single is not None:
            groups = {self._routes.single: list(range(len(full_keys)))}
        else:
            await self._route(full_keys[0])
            try:
                groups = self._routes.group(full_keys)
            except TRANSLATED_ERRORS as exc:
                self._errors += 1
                raise translate_redis_error(exc, "routing") from exc

        async def run(route: Route, positions: list[int]) -> None:
            async def execute() -> list[Any]:
                pipe = self.client.pipeline(transaction=False)
                for index in positions:
                    queue(pipe, index)
                replies: list[Any] = await pipe.execute()
                return replies

            try:
                bulk = len(positions) > _BULK
                replies = await self._run(route, what, execute, check=check, bulk=bulk)
            except CacheError as exc:
                for index in positions:
                    results[index] = exc
            else:
                for index, reply in zip(positions, replies, strict=True):
                    results[index] = reply

        if len(groups) == 1:
            await run(*next(iter(groups.items())))
        else:
            await asyncio.gather(*(run(route, positions) for route, positions in groups.items()))
        return results

    @staticmethod
    def _first_error(results: Iterable[Any]) -> None:
        for result in results:
            if isinstance(result, CacheError):
                raise result

    async def _fetch_batch(
        self, keys: list[str], ttl_keys: list[str]
    ) -> dict[str, RawReply | BaseException]:
        if self.is_cluster:
            routed = [*keys, *ttl_keys]

            def queue(pipe: Any, index: int) -> None:
                if index < len(keys):
                    pipe.get(routed[index])
                else:
                    pipe.pttl(routed[index])

            replies = await self._fan_out("GET", routed, queue, check=False)
            pttls = dict(zip(ttl_keys, replies[len(keys) :], strict=True))
            out: dict[str, RawReply | BaseException] = {}
            for key, value in zip(keys, replies, strict=False):
                pttl = pttls.get(key)
                failed = value if isinstance(value, CacheError) else pttl
                if isinstance(failed, CacheError):
                    out[key] = failed
                else:
                    out[key] = (value, pttl)
            return out

        async def fetch() -> list[Any]:
            if ttl_keys:
                pipe = self.client.pipeline(transaction=False)
                pipe.mget(keys)
                for key in ttl_keys:
                    pipe.pttl(key)
                reply: list[Any] = await pipe.execute()
                return [*reply[0], *reply[1:]]
            values: list[Any] = await self.client.mget(keys)
            return values

        route = cast(Route, self._routes.single)
        values = await self._run(route, "GET", fetch, check=False)
        pttls = dict(zip(ttl_keys, values[len(keys) :], strict=True))
        return {key: (value, pttls.get(key)) for key, value in zip(keys, values, strict=False)}

    # -- the Cache protocol ------------------------------------------------------------

    async def get(self, key: str, default: Any = MISSING) -> Any:
        """The value at *key*, or *default*; concurrent calls share one round trip."""
        full = self._prefix + key
        self._allow(self._routes.single or await self._route(full))
        raw, _ = await self._coalescer.submit(full)
        value = self._decode(key, raw)
        if value is MISSING:
            self._misses += 1
            return default
        self._hits += 1
        return value

    async def get_with_ttl(self, key: str, default: Any = MISSING) -> tuple[Any, float | None]:
        """``(value, remaining ttl in seconds or None)``, or ``(default, None)`` on a miss."""
        full = self._prefix + key
        self._allow(self._routes.single or await self._route(full))
        raw, pttl = await self._coalescer.submit(full, with_ttl=True)
        value = self._decode(key, raw)
        if value is MISSING or pttl == -2:  # -2: expired between GET and PTTL
            self._misses += 1
            return default, None
        self._hits += 1
        return value, (pttl / 1000 if pttl is not None and pttl >= 0 else None)

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """Store *value* at *key* for *ttl* seconds (``None``: the default TTL)."""
        data = self._encode(value)
        px = self._ttl_ms(ttl)
        full = self._prefix + key
        tag_keys = list(dict.fromkeys(self.tag_key(tag) for tag in tags))
        if not tag_keys:
            await self._keyed("SET", full, lambda target: target.set(full, data, px=px))
        else:
            await self._set_tagged(full, data, px, tag_keys)
        self._sets += 1

    async def _set_tagged(
        self, full: str, data: bytes, px: int | None, tag_keys: list[str]
    ) -> None:
        """SET *full*, then add it to each tag set, in that order: a tag set that
        :meth:`invalidate_tags` pops either lists the key already (and its value, written
        before, is unlinked after the pop) or the key lands in the set that replaces it.
        Tag sets on the key's node go in its pipeline after the SET (a node runs a pipeline
        in order); the others follow once it answered. A tag that cannot be recorded
        unlinks the value, so that it never outlives an invalidation of that tag."""
        ttl = -1 if px is None else px
        home = self._routes.single or await self._route(full)
        near: list[str] = []
        far: list[str] = []
        for tag_key in tag_keys:
            same = self._routes.single is not None or await self._route(tag_key) is home
            (near if same else far).append(tag_key)
        first = [full, *near]

        def queue(pipe: Any, index: int) -> None:
            if index == 0:
                pipe.set(full, data, px=px)
            else:
                pipe.eval(_TAG, 1, first[index], ttl, full)

        results = await self._fan_out("SET", first, queue)
        if far:  # even after a failed SET: it may have been applied (a reply lost)
            results += await self._fan_out(
                "SET", far, lambda pipe, index: pipe.eval(_TAG, 1, far[index], ttl, full)
            )
        if any(isinstance(result, CacheError) for result in results[1:]):
            # whether the SET was applied is unknown (a pipeline fails as a whole)
            with contextlib.suppress(CacheError):
                await self._keyed(
                    "UNLINK", full, lambda target: target.execute_command("UNLINK", full)
                )
        self._first_error(results)

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item of *mapping* in one pipelined round trip (per node in Cluster)."""
        items = [(self._prefix + key, self._encode(value)) for key, value in mapping.items()]
        if not items:
            return
        expiries = [self._ttl_ms(ttl) for _ in items]

        def queue(pipe: Any, index: int) -> None:
            full, data = items[index]
            pipe.set(full, data, px=expiries[index])

        results = await self._fan_out("SET", [full for full, _ in items], queue)
        self._sets += sum(not isinstance(result, CacheError) for result in results)
        self._first_error(results)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The found keys of *keys* with their values (absent keys are left out).

        On a Cluster with some masters unreachable the keys they own are left out too (and
        counted in ``errors``); :class:`CacheUnavailable` only when no master answered.
        """
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        fulls = [self._prefix + key for key in wanted]
        if self.is_cluster:
            raws = await self._fan_out("MGET", fulls, lambda pipe, i: pipe.get(fulls[i]))
            if all(isinstance(raw, CacheError) for raw in raws):
                self._first_error(raws)
        else:
            route = cast(Route, self._routes.single)
            client = self.client
            raws = await self._run(
                route, "MGET", lambda: client.mget(fulls), bulk=len(fulls) > _BULK
            )
        found: dict[str, Any] = {}
        for key, raw in zip(wanted, raws, strict=True):
            if isinstance(raw, CacheError):
                continue
            value = self._decode(key, raw)
            if value is MISSING:
                self._misses += 1
            else:
                self._hits += 1
                found[key] = value
        return found

    async def delete(self, key: str) -> bool:
        """Remove *key*; ``True`` if it was there."""
        full = self._prefix + key
        removed: int = await self._keyed(
            "UNLINK", full, lambda target: target.execute_command("UNLINK", full)
        )
        self._deletes += removed
        return removed > 0

    async def exists(self, key: str) -> bool:
        """Whether *key* is stored (and not expired)."""
        full = self._prefix + key
        found: int = await self._keyed("EXISTS", full, lambda target: target.exists(full))
        return found > 0

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add *amount* to the integer at *key* (0 if absent) and return the new value."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {amount!r}")
        full = self._prefix + key
        try:
            result: int = await self._keyed(
                "INCRBY", full, lambda target: target.incrby(full, amount)
            )
        except CacheError as exc:
            if isinstance(exc.__cause__, redis_errors.ResponseError) and not isinstance(
                exc, CacheUnavailable
            ):
                raise WrongValueType(
                    f"cannot incr {key!r}: the stored value is not an integer"
                ) from exc
            raise
        return result

    async def ttl(self, key: str) -> float | None:
        """Seconds until *key* expires; ``None`` if it has no expiry or is absent."""
        full = self._prefix + key
        pttl: int = await self._keyed("PTTL", full, lambda target: target.pttl(full))
        return pttl / 1000 if pttl >= 0 else None

    async def _scan_unlink(self, match: str, what: str) -> int:
        """SCAN MATCH on every master (never KEYS) and UNLINK what it finds; the count."""
        client = self.client
        removed = 0
        if isinstance(client, RedisCluster):
            if not self._routes.ready:
                await self._route(self._prefix)
            for node, route in self._routes.primaries():
                cursor = 0
                while True:

                    async def scan_node(cursor: int = cursor, node: ClusterNode = node) -> Any:
                        return await client.scan(cursor, match=match, count=500, target_nodes=node)

                    # cluster SCAN answers ({node name: cursor}, keys)
                    cursors, found = await self._run(route, what, scan_node, bulk=True)
                    cursor = cursors[node.name]
                    removed += await self._unlink(what, found)
                    if cursor == 0:
                        break
        else:
            cursor = 0
            while True:

                async def scan(cursor: int = cursor) -> Any:
                    return await client.scan(cursor, match=match, count=500)

                single = cast(Route, self._routes.single)
                cursor, found = await self._run(single, what, scan, bulk=True)
                removed += await self._unlink(what, found)
                if cursor == 0:
                    break
        return removed

    async def _unlink(self, what: str, keys: Sequence[Any]) -> int:
        removed, _, error = await self._unlink_keys(what, keys)
        if error is not None:
            raise error
        return removed

    async def _unlink_keys(
        self, what: str, keys: Sequence[Any]
    ) -> tuple[int, list[Any], CacheError | None]:
        """UNLINK *keys* (one command on standalone Redis, one per key pipelined per node on
        a Cluster): the count removed, the keys whose node failed, and its error."""
        if not keys:
            return 0, [], None
        batch = list(keys)
        if not self.is_cluster:
            route = cast(Route, self._routes.single)
            try:
                removed: int = await self._run(
                    route, what, lambda: self.client.unlink(*batch), bulk=len(batch) > _BULK
                )
            except CacheError as exc:
                return 0, batch, exc
            return removed, [], None
        results = await self._fan_out(
            what, batch, lambda pipe, i: pipe.execute_command("UNLINK", batch[i])
        )
        errors = [result for result in results if isinstance(result, CacheError)]
        failed = [
            key
            for key, result in zip(batch, results, strict=True)
            if isinstance(result, CacheError)
        ]
        removed = sum(result for result in results if not isinstance(result, CacheError))
        return removed, failed, errors[0] if errors else None

    async def delete_pattern(self, pattern: str) -> int:
        """Delete the keys matching the glob *pattern* (inside the namespace); the count."""
        removed = await self._scan_unlink(_escape_glob(self._prefix) + pattern, "delete_pattern")
        self._deletes += removed
        return removed

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete every key set with any of *tags*; the count of keys.

        Each tag record is read in one command, the keys it lists are deleted, and then
        only the records read are dropped: a key tagged again meanwhile keeps its record
        (its stamp is newer). So when this returns, no key whose tagged ``set`` returned
        before this call began is left — even while other invalidations of the same tag run
        — and a key tagged after the record was read is still found by the next call. Keys
        whose node failed keep their record (then the error is raised).
        """
        if not tags:
            return 0
        tag_keys = list(dict.fromkeys(self.tag_key(tag) for tag in tags))
        read = await self._fan_out(
            "invalidate_tags",
            tag_keys,
            lambda pipe, i: pipe.zrange(tag_keys[i], 0, -1, withscores=True),
        )
        members = sorted(
            {member for reply in read if not isinstance(reply, CacheError) for member, _ in reply}
        )
        removed, failed, error = await self._unlink_keys("invalidate_tags", members)
        kept = set(failed)
        forget: list[tuple[str, list[Any]]] = []
        for tag_key, reply in zip(tag_keys, read, strict=True):
            if not isinstance(reply, CacheError) and reply:
                highest = max(score for _, score in reply)
                forget.append((tag_key, [highest, *(m for m, _ in reply if m in kept)]))
        if forget:
            await self._fan_out(
                "invalidate_tags",
                [tag_key for tag_key, _ in forget],
                lambda pipe, i: pipe.eval(_FORGET, 1, forget[i][0], *forget[i][1]),
            )  # a failure here leaves records of deleted keys: harmless, dropped next time
        self._deletes += removed
        self._first_error(read)
        if error is not None:
            raise error
        return removed

    async def clear(self) -> None:
        """Delete every key of this namespace (and its tag records), on every master."""
        await self._scan_unlink(_escape_glob(self.namespace) + "[:#]*", "clear")

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", "breaker": state, "latency_ms": ...}``;
        never raises. On a Cluster ``nodes`` has each master's status and breaker, and the
        status is ``degraded`` while some (not all) masters are down."""
        started = time.perf_counter()
        report: dict[str, Any] = {
            "name": self.name,
            "backend": "redis-cluster" if self.is_cluster else "redis",
            "namespace": self.namespace,
        }
        errors: list[str] = []
        if self.is_cluster:
            nodes: dict[str, Any] = {}
            try:
                await self._route(self._prefix)
                primaries = self._routes.primaries()
            except CacheError as exc:
                errors.append(str(exc))
                primaries = []
            for node, route in primaries:

                async def ping(node: ClusterNode = node) -> Any:
                    return await self.client.ping(target_nodes=node)

                try:
                    await self._run(route, "PING", ping)
                except CacheError as exc:
                    errors.append(f"{route.node}: {exc}")
                    nodes[route.node] = {"status": "down", "breaker": route.breaker.state.value}
                else:
                    nodes[route.node] = {"status": "ok", "breaker": route.breaker.state.value}
            report["nodes"] = nodes
            healthy = sum(node["status"] == "ok" for node in nodes.values())
            status = "ok" if not errors else "degraded" if healthy else "down"
        else:
            route = cast(Route, self._routes.single)
            try:
                await self._run(route, "PING", lambda: self.client.ping())
            except CacheError as exc:
                errors.append(str(exc))
            status = "down" if errors else "ok"
        latency = round((time.perf_counter() - started) * 1000, 3)
        report.update(
            status=status,
            latency_ms=None if status == "down" else latency,
            error="; ".join(errors) or None,
            breaker=self._breaker_summary(),
        )
        return report

    def _breaker_summary(self) -> str:
        """The standalone breaker's state; on a Cluster the worst of the masters' breakers."""
        if self._routes.single is not None:
            return self.breaker.state.value
        states = {route.breaker.state for route in self._routes.all()}
        for state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
            if state in states:
                return state.value
        return BreakerState.CLOSED.value

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers in use: ``{name: breaker}`` on standalone Redis, one per master seen
        so far (``"host:port"``) on a Cluster."""
        return {route.node: route.breaker for route in self._routes.all()}

    def breaker_for(self, redis_key: str) -> CircuitBreaker:
        """The breaker of the node that owns *redis_key* (a Redis key, namespace included,
        e.g. a lock's or a Bloom filter's), so commands sent on this cache's client outside
        the cache share its view of that node — ``breaker`` on standalone Redis, or on a
        Cluster not yet used."""
        if self._routes.single is not None or not self._routes.ready:
            return self.breaker
        try:
            return self._routes.for_key(redis_key).breaker
        except TRANSLATED_ERRORS:
            return self.breaker

    def stats(self) -> CacheStats:
        """A snapshot of the counters (one tier, called ``name``)."""
        return CacheStats(
            tiers=(
                TierStats(
                    name=self.name,
                    hits=self._hits,
                    misses=self._misses,
                    sets=self._sets,
                    deletes=self._deletes,
                    errors=self._errors,
                    events=self._routes.event_counts(),
                ),
            )
        )

    @property
    def coalesced_batches(self) -> int:
        """How many round trips the coalesced ``get`` calls took so far."""
        return self._coalescer.batches

    async def close(self) -> None:
        """Let in-flight reads finish, then close the client if this cache created it."""
        await self._coalescer.aclose()
        await self._routes.aclose()
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        kind = "cluster" if self.is_cluster else "standalone"
        return (
            f"RedisCache(name={self.name!r}, {kind}, namespace={self.namespace!r}, "
            f"hits={self._hits}, misses={self._misses}, errors={self._errors}, "
            f"breaker={self._breaker_summary()})"
        )
