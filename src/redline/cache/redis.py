"""The Redis tier: one :class:`RedisCache` for standalone Redis and Redis Cluster.

Single-key reads issued in the same event-loop tick are coalesced into one ``MGET``
(standalone) or one pipeline per node (Cluster); every command goes through a
:class:`~redline.cache.breaker.CircuitBreaker` — one per Cluster master, so a dead master
fails only the keys it owns — and redis-py errors are translated into
:class:`~redline.exceptions.CacheUnavailable` / :class:`~redline.exceptions.CacheError`.

The parts live beside this module: how a command is routed and run
(:mod:`~redline.cache._redis_commands`), the tag index (:mod:`~redline.cache._redis_tags`),
pattern deletes by SCAN (:mod:`~redline.cache._redis_scan`), client construction
(:mod:`~redline.cache._redis_clients`) and the health probe
(:mod:`~redline.cache._redis_health`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline import _trace_hooks
from redline.cache._coalesce import GetCoalescer, RawReply
from redline.cache._redis_commands import BULK, RedisCommands, raise_first_error
from redline.cache._redis_errors import translate_redis_error
from redline.cache._redis_health import ping_nodes
from redline.cache._redis_scan import escape_glob, scan_unlink
from redline.cache._redis_tags import TagIndex
from redline.cache._routes import Route, Routes
from redline.cache.base import MISSING, CacheStats, TierStats
from redline.cache.breaker import BreakerState, CircuitBreaker
from redline.exceptions import CacheError, CacheUnavailable, WrongValueType

if TYPE_CHECKING:
    from redline.cache.serialization import Serializer

__all__ = ["RedisCache", "translate_redis_error"]  # the latter re-exported for callers

logger = logging.getLogger(__name__)
RedisClient = Redis | RedisCluster


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
        self._owns_client = owns_client
        self._routes = Routes(
            client, self.breaker, max_in_flight=max_in_flight, name=name, logger=logger
        )
        self._commands = RedisCommands(client, self._routes)
        self._tags = TagIndex(self._commands, namespace)
        self._coalescer = GetCoalescer(self._fetch_batch)
        self._hits = self._misses = self._sets = self._deletes = 0

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
        from redline.cache._redis_clients import client_for_url

        client, max_in_flight = client_for_url(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
        )
        return cls(
            client,
            namespace=namespace,
            serializer=serializer,
            default_ttl=default_ttl,
            ttl_jitter=ttl_jitter,
            breaker=breaker,
            max_in_flight=max_in_flight,
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
        from redline.cache._redis_clients import client_for_nodes

        client = client_for_nodes(
            nodes,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            ssl=ssl,
            username=username,
            password=password,
        )
        return cls(
            client,
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
        return self._tags.tag_key(tag)

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
            self._commands.errors += 1
            logger.warning(
                "cache %s: undecodable value at %r read as a miss: %s", self.name, key, exc
            )
            return MISSING

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

            replies = await self._commands.fan_out("GET", routed, queue, check=False)
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
        values = await self._commands.run(route, "GET", fetch, check=False)
        pttls = dict(zip(ttl_keys, values[len(keys) :], strict=True))
        return {key: (value, pttls.get(key)) for key, value in zip(keys, values, strict=False)}

    # -- the Cache protocol ------------------------------------------------------------

    async def get(self, key: str, default: Any = MISSING) -> Any:
        """The value at *key*, or *default*; concurrent calls share one round trip."""
        full = self._prefix + key
        self._commands.allow(self._routes.single or await self._commands.route(full))
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
        self._commands.allow(self._routes.single or await self._commands.route(full))
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
        tags = tuple(tags)  # any iterable, read once
        if not tags:
            await self._commands.keyed("SET", full, lambda target: target.set(full, data, px=px))
        else:
            await self._tags.set_tagged(full, data, px, tags)
        self._sets += 1

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store every item of *mapping* in one pipelined round trip (per node in Cluster)."""
        items = [(self._prefix + key, self._encode(value)) for key, value in mapping.items()]
        if not items:
            return
        expiries = [self._ttl_ms(ttl) for _ in items]

        def queue(pipe: Any, index: int) -> None:
            full, data = items[index]
            pipe.set(full, data, px=expiries[index])

        results = await self._commands.fan_out("SET", [full for full, _ in items], queue)
        self._sets += sum(not isinstance(result, CacheError) for result in results)
        raise_first_error(results)

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
            raws = await self._commands.fan_out("MGET", fulls, lambda pipe, i: pipe.get(fulls[i]))
            if all(isinstance(raw, CacheError) for raw in raws):
                raise_first_error(raws)
        else:
            route = cast(Route, self._routes.single)
            client = self.client
            raws = await self._commands.run(
                route, "MGET", lambda: client.mget(fulls), bulk=len(fulls) > BULK
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
        _trace_hooks.cache_read(0, len(found))
        return found

    async def delete(self, key: str) -> bool:
        """Remove *key*; ``True`` if it was there."""
        full = self._prefix + key
        removed: int = await self._commands.keyed(
            "UNLINK", full, lambda target: target.execute_command("UNLINK", full)
        )
        self._deletes += removed
        return removed > 0

    async def exists(self, key: str) -> bool:
        """Whether *key* is stored (and not expired)."""
        full = self._prefix + key
        found: int = await self._commands.keyed("EXISTS", full, lambda target: target.exists(full))
        return found > 0

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add *amount* to the integer at *key* (0 if absent) and return the new value."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {amount!r}")
        full = self._prefix + key
        try:
            result: int = await self._commands.keyed(
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
        pttl: int = await self._commands.keyed("PTTL", full, lambda target: target.pttl(full))
        return pttl / 1000 if pttl >= 0 else None

    async def delete_pattern(self, pattern: str) -> int:
        """Delete the keys matching the glob *pattern* (inside the namespace); the count."""
        match = escape_glob(self._prefix) + pattern
        removed = await scan_unlink(self._commands, match, "delete_pattern")
        self._deletes += removed
        return removed

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete every key set with any of *tags*; the count of keys.

        When this returns, no key is left whose tagged ``set`` returned before this call
        began (even while other invalidations of the same tags run), and a key tagged
        meanwhile keeps its record, so the next call finds it. Keys whose node failed keep
        their record too (then the error is raised).
        """
        removed = await self._tags.invalidate(tags)
        self._deletes += removed
        return removed

    async def clear(self) -> None:
        """Delete every key of this namespace (and its tag records), on every master."""
        await scan_unlink(self._commands, escape_glob(self.namespace) + "[:#]*", "clear")

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
        status, errors, nodes = await ping_nodes(self._commands, self._prefix)
        if nodes is not None:
            report["nodes"] = nodes
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
        return self._routes.breaker_for(redis_key)

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
                    errors=self._commands.errors,
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
            f"hits={self._hits}, misses={self._misses}, errors={self._commands.errors}, "
            f"breaker={self._breaker_summary()})"
        )
