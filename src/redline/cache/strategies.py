"""Cache strategies: cache-aside (with the stampede and penetration protections) and write-through.

Cache-aside reads the cache and, on a miss, runs the loader and stores what it returns:

* **in-process single-flight** (unless ``single_flight=False``): concurrent misses of one
  key in one process share one load;
* ``lock=``: **cross-process single-flight** through a :class:`DistributedLock` — one
  process loads, the others wait on pub/sub and read what it stored;
* ``bloom=``: a :class:`BloomFilter` / :class:`RedisBloomFilter` of every key that exists;
  a miss whose key is certainly not in it returns ``MISSING`` without calling the loader;
* ``negative_ttl=``: **negative caching** — a loader says "no such thing" by returning
  ``MISSING``; that answer is remembered (as a small marker value) for ``negative_ttl``
  seconds, and reads of it return ``MISSING`` without calling the loader;
* ``early_refresh=beta``: **XFetch** (see :mod:`redline.cache.early_refresh`) — a hot key
  is recomputed by one caller shortly before it expires while the others keep getting
  the old value; a failed refresh keeps serving the old value until it expires.

``cache_aside`` returns the value, or ``MISSING`` when the key does not exist (the loader
returned ``MISSING``, the negative cache said so, or the Bloom filter ruled it out).
A cache (or lock) that is down never breaks a read: the error is counted in ``errors`` and
``events`` (and logged once per cause when the failures start and once when they stop,
``ok`` with how many there were, not once per call), the read counts as a miss, the loader
runs (still single-flight in-process) and its value is returned uncached. ``lock=True`` and
a :class:`RedisBloomFilter` on the cache's own client go through the cache's circuit
breaker for their key, so while Redis is known to be down they cost nothing: the lock is
skipped and the filter rules nothing out, at once. Loader errors propagate to every caller
sharing the load.

Example::

    user = await cache_aside(cache, "user:42", lambda: db.fetch_user(42), ttl=300,
                             lock=True, negative_ttl=30)
"""

from __future__ import annotations

import functools
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from redline._events import EventLog
from redline.cache.abilities import Peek, RedisBacked, read_path, redis_tier, tiers
from redline.cache.base import MISSING, Cache
from redline.cache.bloom import BloomFilter, RedisBloomFilter
from redline.cache.breaker import CircuitBreaker
from redline.cache.early_refresh import MARK, should_refresh, unwrap, wrap
from redline.cache.lock import DistributedLock, RedisClient, load_once
from redline.cache.singleflight import SingleFlight
from redline.exceptions import CacheError, CacheUnavailable

__all__ = [
    "BloomOption",
    "CacheAside",
    "CacheAsideStats",
    "LockOption",
    "cache_aside",
    "cache_aside_stats",
    "is_negative",
    "is_stored_form",
    "redis_client_of",
    "write_through",
]

logger = logging.getLogger(__name__)

Loader: TypeAlias = Callable[[], Awaitable[Any]]
LockOption: TypeAlias = bool | DistributedLock | Callable[[str], DistributedLock] | None
BloomOption: TypeAlias = BloomFilter | RedisBloomFilter | None

_NEGATIVE: dict[str, str] = {MARK: "not-found"}


def is_negative(raw: Any) -> bool:
    """Whether *raw* (a value read from the cache) is a negative-cache marker."""
    return isinstance(raw, dict) and raw.get(MARK) == "not-found"


def is_stored_form(raw: Any) -> bool:
    """Whether *raw* (a value read from the cache) is one of redline's stored forms (a
    negative-cache marker, an early-refresh envelope) rather than a value to return as is."""
    return raw.__class__ is dict and MARK in raw


@dataclass(frozen=True, slots=True)
class CacheAsideStats:
    """Counters of cache-aside reads on one cache."""

    hits: int = 0
    misses: int = 0
    loads: int = 0
    coalesced: int = 0
    negative_hits: int = 0
    bloom_rejections: int = 0
    early_refreshes: int = 0
    errors: int = 0


class CacheAside:
    """Cache-aside reads of one cache with default options; :meth:`get` may override them.

    Besides the protections of the module docstring: ``jitter`` spreads every stored TTL by
    +/- that fraction (entries written together do not expire together), ``single_flight``
    (on by default) shares one load among the concurrent misses of a key in this process,
    ``name`` labels its log lines and :attr:`events`. The
    :class:`~redline.cache.abilities.SyncPeek` / :class:`~redline.cache.abilities.ReadBelowL1`
    abilities of the cache are used when it has them (resolved once, here): a
    :class:`~redline.cache.memory.MemoryCache` is read without a coroutine switch.

    One load serves every concurrent miss of a key (with ``single_flight``): a caller that is
    cancelled stops waiting but the load goes on for the others; when every caller has been
    cancelled, the load is cancelled too. A loader error reaches every caller sharing that
    load and is not cached. A cache that fails (:class:`~redline.exceptions.CacheError`)
    never breaks a read: it is counted in :attr:`events` and logged once per cause when the
    failures start and once when they stop (``ok``, with how many there were), not per call.

    Example::

        users = CacheAside(cache, ttl=300, lock=True, negative_ttl=30, early_refresh=1.0)
        user = await users.get("user:42", lambda: db.fetch_user(42))
    """

    def __init__(
        self,
        cache: Cache,
        *,
        ttl: float | None = None,
        jitter: float = 0.0,
        single_flight: bool = True,
        lock: LockOption = None,
        bloom: BloomOption = None,
        negative_ttl: float | None = None,
        early_refresh: float | None = None,
        lock_lease: float = 10.0,
        lock_wait_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        name: str = "cache-aside",
    ) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be >= 0 and < 1, got {jitter}")
        self.cache = cache
        self.ttl = ttl
        self.jitter = jitter
        self.lock = lock
        self.bloom = bloom
        self.negative_ttl = negative_ttl
        self.early_refresh = early_refresh
        self.lock_lease = lock_lease
        self.lock_wait_timeout = lock_wait_timeout
        self._defaults = _Options(ttl, lock, bloom, negative_ttl, early_refresh)
        self._defaults.validate(needs_ttl=False)
        self._clock = clock
        self._rand = rand
        self._peek, self._rest = read_path(cache)
        self._flight = SingleFlight() if single_flight else None
        self._refreshing: set[str] = set()
        self._counts = dict.fromkeys(CacheAsideStats.__slots__, 0)
        self._failing = False
        self.events = EventLog(logger, name)

    @property
    def single_flight(self) -> bool:
        """Whether concurrent misses of one key in this process share one load."""
        return self._flight is not None

    async def get(
        self,
        key: str,
        loader: Loader,
        *,
        ttl: float | None = None,
        lock: LockOption = None,
        bloom: BloomOption = None,
        negative_ttl: float | None = None,
        early_refresh: float | None = None,
    ) -> Any:
        """The value of *key*, loaded with *loader* on a miss; ``MISSING`` if it doesn't exist."""
        overrides = (ttl, lock, bloom, negative_ttl, early_refresh)
        if overrides == (None, None, None, None, None):
            options = self._defaults
        else:
            options = _Options(
                ttl=self.ttl if ttl is None else ttl,
                lock=self.lock if lock is None else lock,
                bloom=self.bloom if bloom is None else bloom,
                negative_ttl=self.negative_ttl if negative_ttl is None else negative_ttl,
                early_refresh=self.early_refresh if early_refresh is None else early_refresh,
            )
        options.validate()
        peeked = MISSING if self._peek is None else self._peek(key, MISSING)
        return await self._get(key, peeked, loader, options)

    def check(self) -> None:
        """Raise ``ValueError`` if the default options cannot serve :meth:`after_peek`."""
        self._defaults.validate()

    @property
    def peek(self) -> Peek | None:
        """The synchronous read of the cache's in-process tier (``None``: it has none).

        A caller may run it first and hand what it returned to :meth:`after_peek`: a hit of
        a plain value (:func:`is_stored_form` false) is then the final answer."""
        return self._peek

    async def after_peek(self, key: str, peeked: Any, loader: Loader) -> Any:
        """:meth:`get` with the default options, for a caller that ran :attr:`peek` itself
        and got *peeked* (``MISSING`` on a miss, or without a peek); see :func:`cached`."""
        return await self._get(key, peeked, loader, self._defaults)

    async def _get(self, key: str, raw: Any, loader: Loader, options: _Options) -> Any:
        """The one read path: decode a hit, else read the slower tiers, else load once."""
        if raw is MISSING and self._rest is not None:
            try:
                raw = await self._rest(key)
            except CacheError as exc:
                self._failed("read", key, exc)  # the read is a miss: the loader runs
            else:
                if self._failing:
                    self._recovered()
        if raw is not MISSING:
            if raw.__class__ is not dict or MARK not in raw:
                self._counts["hits"] += 1
                return raw
            return await self._on_hit(key, raw, loader, options)
        self._count("misses")
        if options.bloom is not None and not await self._bloom_contains(options.bloom, key):
            self._count("bloom_rejections")
            return MISSING
        flight = self._flight
        if flight is None:
            return await self._load(key, loader, options)
        if flight.in_flight(key):
            self._count("coalesced")
        return await flight.do(key, functools.partial(self._load, key, loader, options))

    async def _safe_get(self, key: str) -> Any:
        """``cache.get``; a cache that is down reads as a miss (counted, logged once)."""
        try:
            value = await self.cache.get(key)
        except CacheError as exc:
            self._failed("read", key, exc)  # the read is a miss: the loader runs
            return MISSING
        if self._failing:
            self._recovered()
        return value

    async def _safe_set(self, key: str, value: Any, ttl: float | None) -> None:
        """``cache.set``; a failed write is counted and logged once, the value still returned."""
        try:
            await self.cache.set(key, value, ttl)
        except CacheError as exc:
            self._failed("write", key, exc)  # the value is returned uncached
            return
        if self._failing:
            self._recovered()

    def _failed(self, cause: str, key: str, exc: BaseException) -> None:
        """Count a cache failure; only the first of a run (and a state change) is logged."""
        self._count("errors")
        self.events.failure(cause, _about(key, exc))
        if not self._failing:  # counted; not logged: the failure's own line says it
            self._failing = True
            self.events.state("failing", f"{cause} {_about(key, exc)}", level=logging.DEBUG)

    def _recovered(self) -> None:
        self._failing = False
        self.events.state("ok", level=logging.INFO)  # with the failures counted meanwhile

    async def _on_hit(self, key: str, raw: Any, loader: Loader, options: _Options) -> Any:
        if is_negative(raw):
            self._count("negative_hits")
            return MISSING
        self._count("hits")
        envelope = unwrap(raw)
        if envelope is None:
            return raw
        if (
            options.early_refresh is not None
            and key not in self._refreshing
            and not (self._flight is not None and self._flight.in_flight(key))
            and should_refresh(
                envelope, now=self._clock(), beta=options.early_refresh, rand=self._rand()
            )
        ):
            return await self._refresh_early(key, envelope.value, loader, options)
        return envelope.value

    async def _refresh_early(self, key: str, old: Any, loader: Loader, options: _Options) -> Any:
        """Recompute *key* ahead of expiry; concurrent readers keep getting *old* meanwhile."""
        self._refreshing.add(key)
        try:
            lock = self._lock_for(key, options)
            if lock is not None and not await lock.try_acquire():
                return old  # another process is refreshing it
            try:
                value = _decode(await self._load_and_store(key, loader, options))
            finally:
                if lock is not None:
                    await lock.release()
            self._count("early_refreshes")
            return value
        except Exception as exc:
            self.events.failure("early refresh", _about(key, exc))  # the old value is served
            return old
        finally:
            self._refreshing.discard(key)

    async def _load(self, key: str, loader: Loader, options: _Options) -> Any:
        lock = self._lock_for(key, options)
        if lock is None:
            return _decode(await self._load_and_store(key, loader, options))
        loaded = False

        async def load_and_store() -> Any:
            nonlocal loaded
            loaded = True
            return await self._load_and_store(key, loader, options)

        try:
            raw = await load_once(
                lock,
                lambda: self._safe_get(key),
                load_and_store,
                is_hit=lambda value: value is not MISSING,
            )
        except CacheUnavailable as exc:
            if loaded:
                raise
            # Redis is down: no cross-process lock to take; load (still single-flight here).
            self._failed("lock", key, exc)  # loaded without it
            raw = await self._load_and_store(key, loader, options)
        return _decode(raw)

    async def _load_and_store(self, key: str, loader: Loader, options: _Options) -> Any:
        """Run the loader and store its result; return the stored form (value/envelope/marker)."""
        started = self._clock()
        value = await loader()
        self._count("loads")
        if value is MISSING:
            if options.negative_ttl is not None:
                await self._safe_set(key, _NEGATIVE, options.negative_ttl)
            return _NEGATIVE
        ttl = options.ttl
        if ttl is not None and self.jitter:
            ttl *= 1.0 + self.jitter * (2.0 * self._rand() - 1.0)
        stored = value
        if options.early_refresh is not None and ttl is not None:
            now = self._clock()
            stored = wrap(value, delta=max(now - started, 0.0), expires_at=now + ttl)
        await self._safe_set(key, stored, ttl)
        return stored

    def _lock_for(self, key: str, options: _Options) -> DistributedLock | None:
        lock = options.lock
        if lock is None or lock is False:
            return None
        if isinstance(lock, DistributedLock):
            return lock
        if lock is True:
            tier = _redis_tier_of(self.cache)
            name = f"{tier.namespace}:lock:{{{key}}}"
            return DistributedLock(
                tier.client,
                name,
                lease=self.lock_lease,
                wait_timeout=self.lock_wait_timeout,
                breaker=tier.breaker_for(name),
                events=self.events,
            )
        return lock(key)

    async def _bloom_contains(self, bloom: BloomFilter | RedisBloomFilter, key: str) -> bool:
        """Whether *key* may exist; a Redis filter that is down cannot rule anything out."""
        if not isinstance(bloom, RedisBloomFilter):
            return bloom.contains(key)
        breaker = _breaker_for(self.cache, bloom.client, bloom.key)
        try:
            if breaker is None:
                return await bloom.contains(key)
            return await breaker.call(lambda: bloom.contains(key))
        except CacheUnavailable as exc:
            self.events.failure("bloom filter", _about(key, exc))  # not guarding this read
            return True

    def _count(self, name: str) -> None:
        self._counts[name] += 1

    def stats(self) -> CacheAsideStats:
        return CacheAsideStats(**self._counts)

    def __repr__(self) -> str:
        loading = 0 if self._flight is None else self._flight.stats().in_flight
        return (
            f"<CacheAside {type(self.cache).__name__} loading={loading} "
            f"refreshing={len(self._refreshing)} {self.stats()}>"
        )


@dataclass(slots=True)
class _Options:
    ttl: float | None
    lock: LockOption
    bloom: BloomOption
    negative_ttl: float | None
    early_refresh: float | None

    def validate(self, *, needs_ttl: bool = True) -> None:
        if self.negative_ttl is not None and self.negative_ttl <= 0:
            raise ValueError(f"negative_ttl must be > 0, got {self.negative_ttl}")
        if self.early_refresh is not None:
            if self.early_refresh < 0:
                raise ValueError(f"early_refresh must be >= 0, got {self.early_refresh}")
            if needs_ttl and self.ttl is None:
                raise ValueError("early_refresh needs a ttl (the expiry to refresh ahead of)")


def _decode(raw: Any) -> Any:
    """What a caller gets for a stored form: ``MISSING`` for a marker, the value of an envelope."""
    if is_negative(raw):
        return MISSING
    envelope = unwrap(raw)
    return raw if envelope is None else envelope.value


def _about(key: str, exc: BaseException) -> str:
    """A failure's detail for the log: the key it happened on, and the error."""
    return f"{key!r}: {type(exc).__name__}: {exc}"


def _breaker_for(cache: Cache, client: Any, redis_key: str) -> CircuitBreaker | None:
    """The breaker *cache* (or a tier below it) keeps for *redis_key*, if *client* is its client."""
    for node in tiers(cache):
        if isinstance(node, RedisBacked) and node.client is client:
            return node.breaker_for(redis_key)
    return None


def _redis_tier_of(cache: Cache) -> RedisBacked:
    tier = redis_tier(cache)
    if tier is None:
        raise ValueError(
            f"lock=True needs a Redis-backed cache (one with a redis client), got "
            f"{type(cache).__name__}; pass a DistributedLock or a lock factory instead"
        )
    return tier


def redis_client_of(cache: Cache) -> RedisClient:
    """The redis-py client behind *cache* (a Redis cache, or a tiered cache's Redis tier)."""
    return _redis_tier_of(cache).client


_SHARED: weakref.WeakKeyDictionary[Any, CacheAside] = weakref.WeakKeyDictionary()


def _shared(cache: Cache) -> CacheAside:
    try:
        aside = _SHARED.get(cache)
        if aside is None:
            aside = _SHARED[cache] = CacheAside(cache)
    except TypeError:  # not weak-referenceable: no sharing across calls
        return CacheAside(cache)
    return aside


async def cache_aside(
    cache: Cache,
    key: str,
    loader: Loader,
    *,
    ttl: float | None = None,
    lock: LockOption = None,
    bloom: BloomOption = None,
    negative_ttl: float | None = None,
    early_refresh: float | None = None,
) -> Any:
    """Read *key* from *cache*; on a miss run ``await loader()`` once and store the result.

    Returns the value, or ``MISSING`` if the key does not exist (see the module docstring).
    ``lock=True`` takes a :class:`DistributedLock` on the cache's Redis client (lease 10 s,
    wait cap 30 s); pass a ``DistributedLock`` or a ``key -> DistributedLock`` factory to
    choose the lease. Calls on the same cache share one in-process single-flight and one
    set of counters (:func:`cache_aside_stats`).

    Example::

        report = await cache_aside(cache, "report:7", build_report, ttl=60, lock=True)
    """
    return await _shared(cache).get(
        key,
        loader,
        ttl=ttl,
        lock=lock,
        bloom=bloom,
        negative_ttl=negative_ttl,
        early_refresh=early_refresh,
    )


def cache_aside_stats(cache: Cache) -> CacheAsideStats:
    """The counters of the :func:`cache_aside` calls made on *cache*."""
    return _shared(cache).stats()


async def write_through(
    cache: Cache,
    key: str,
    value: Any,
    writer: Callable[[str, Any], Awaitable[object]],
    *,
    ttl: float | None = None,
    tags: Iterable[str] = (),
) -> None:
    """Write *value* to the source of truth with ``await writer(key, value)``, then the cache.

    If the writer raises, the cache is not touched (it keeps the old value) and the error
    propagates. If the writer succeeds but the cache update fails, the entry is deleted
    (best effort) so the old value is not served, and the cache error propagates. With a
    tiered cache, ``set`` publishes the L1 invalidation to the other processes.

    Example::

        await write_through(cache, "user:42", user, lambda k, v: db.save_user(v), ttl=300)
    """
    await writer(key, value)
    try:
        await cache.set(key, value, ttl, tags=tags)
    except CacheError:
        try:
            await cache.delete(key)
        except CacheError:
            logger.warning("write-through: cannot drop stale %r after a failed update", key)
        raise
