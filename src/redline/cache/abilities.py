"""Optional abilities of a cache, beyond the :class:`~redline.cache.base.Cache` protocol.

A backend may offer faster ways to read than ``await cache.get(key)``; the hot paths
(:func:`~redline.cache.decorator.cached`, :class:`~redline.cache.strategies.CacheAside`,
:class:`~redline.cache.tiered.TieredCache`) use them when they are there:

* :class:`SyncPeek`: ``get_nowait(key, default)``, a synchronous read of an in-process tier
  (:class:`~redline.cache.memory.MemoryCache`; a tiered cache's L1);
* :class:`ReadBelowL1`: a cache with an in-process L1 over slower tiers: ``l1_peek`` (L1's
  own ``get_nowait``, or ``None``) and ``get_below_l1(key)``, the rest of ``get`` after
  that peek missed (:class:`~redline.cache.tiered.TieredCache`);
* :class:`GetWithTtl`: ``get_with_ttl(key)``, the value with its remaining TTL, in one read
  (:class:`~redline.cache.memory.MemoryCache`, :class:`~redline.cache.redis.RedisCache`,
  :class:`~redline.cache.tiered.TieredCache`).

Two more say what a cache is built on, for the tools that share its Redis connection
(``lock=True`` in :class:`~redline.cache.strategies.CacheAside` and ``@cached``):

* :class:`OverTier`: ``l2``, the lower tier a cache is stacked over
  (:class:`~redline.cache.tiered.TieredCache`); :func:`tiers` walks down them;
* :class:`RedisBacked`: ``client``, ``namespace`` and ``breaker_for(redis_key)``, a Redis
  connection others may send commands on, under the cache's namespace and through its
  circuit breakers (:class:`~redline.cache.redis.RedisCache`); :func:`redis_tier` finds it.

They are checked with ``isinstance`` (the protocols are ``runtime_checkable``): that is
slow, so resolve them once, when the cache is wrapped (:func:`read_path`), never per call.

>>> peek, rest = read_path(TieredCache(MemoryCache(), redis_cache))
>>> value = peek("k", MISSING)          # L1, synchronously
>>> if value is MISSING and rest is not None:
...     value = await rest("k")         # L2 only
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from redline.cache.base import MISSING, Cache
from redline.cache.memory import MemoryCache

if TYPE_CHECKING:
    from redline.cache.breaker import CircuitBreaker
    from redline.cache.lock import RedisClient

__all__ = [
    "GetWithTtl",
    "OverTier",
    "Peek",
    "ReadBelowL1",
    "ReadRest",
    "RedisBacked",
    "SyncPeek",
    "read_path",
    "redis_tier",
    "tiers",
]

#: ``peek(key, default)``: a synchronous read of the in-process tier.
Peek: TypeAlias = Callable[[str, Any], Any]
#: ``await rest(key)``: what is left to read after a peek missed (``MISSING``: absent).
ReadRest: TypeAlias = Callable[[str], Awaitable[Any]]


@runtime_checkable
class SyncPeek(Protocol):
    """A cache that can be read synchronously (it never suspends to answer)."""

    def get_nowait(self, key: str, default: Any = MISSING) -> Any: ...


@runtime_checkable
class ReadBelowL1(Protocol):
    """A cache with an in-process L1 over slower tiers, whose two halves can be read apart."""

    @property
    def l1_peek(self) -> Peek | None:
        """L1's synchronous read, ``None`` if L1 has none."""
        ...

    async def get_below_l1(self, key: str, default: Any = MISSING) -> Any:
        """The rest of ``get`` after an L1 peek missed."""
        ...


@runtime_checkable
class GetWithTtl(Protocol):
    """A cache that returns a value together with its remaining TTL (``None``: no expiry)."""

    async def get_with_ttl(self, key: str, default: Any = MISSING) -> tuple[Any, float | None]: ...


@runtime_checkable
class OverTier(Protocol):
    """A cache stacked over a lower tier (its L2), which may itself be stacked over another."""

    @property
    def l2(self) -> Cache: ...


@runtime_checkable
class RedisBacked(Protocol):
    """A cache on Redis whose connection others may share: commands on ``client``, keys under
    ``"{namespace}:"``, each through ``breaker_for(redis_key)``, the circuit breaker of the
    node that owns that key (so a tool on the same client shares the cache's view of it)."""

    @property
    def client(self) -> RedisClient: ...

    @property
    def namespace(self) -> str: ...

    def breaker_for(self, redis_key: str) -> CircuitBreaker: ...


def tiers(cache: Cache) -> Iterator[Cache]:
    """*cache*, then the tier it is stacked over (:class:`OverTier`), and so on down."""
    seen: list[Cache] = []
    node: Cache | None = cache
    while node is not None and not any(node is s for s in seen):
        seen.append(node)
        yield node
        node = node.l2 if isinstance(node, OverTier) else None


def redis_tier(cache: Cache) -> RedisBacked | None:
    """The first of *cache*'s :func:`tiers` that is :class:`RedisBacked` (``None``: none is)."""
    for node in tiers(cache):
        if isinstance(node, RedisBacked):
            return node
    return None


def read_path(cache: Cache) -> tuple[Peek | None, ReadRest | None]:
    """How to read *cache* fastest: ``(peek, rest)``.

    ``peek`` is a synchronous read of its in-process tier (``None``: it has none); ``rest``
    reads what a missed peek could not see (``None``: nothing, the peek saw everything).
    With no peek, ``rest`` is the whole ``get``.
    """
    if isinstance(cache, ReadBelowL1):
        peek = cache.l1_peek
        if peek is not None:
            return peek, cache.get_below_l1
        return None, cache.get
    if isinstance(cache, MemoryCache):  # everything it holds is in the peekable tier
        return cache.get_nowait, None
    if isinstance(cache, SyncPeek):
        return cache.get_nowait, cache.get
    return None, cache.get
