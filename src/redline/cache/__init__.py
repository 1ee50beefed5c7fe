"""redline.cache: tiered async caching (memory L1, Redis / Redis Cluster L2) and its tools.

>>> from redline.cache import MemoryCache, RedisCache, TieredCache, cached, cache_from_url
>>> cache = cache_from_url("redis://127.0.0.1:6379/0?tiered=1&namespace=app")

A cache of your own implements the :class:`Cache` protocol; the optional abilities the hot
paths use when they are there (:class:`SyncPeek`, :class:`ReadBelowL1`, :class:`GetWithTtl`,
and :class:`OverTier` / :class:`RedisBacked` for ``lock=True``) are protocols too, in
:mod:`redline.cache.abilities`.

Each public name is listed once, as a ``from .module import Name as Name`` re-export under
``TYPE_CHECKING`` (type checkers see it; see :mod:`redline._lazy`); at run time names are
imported on first use (PEP 562), so ``import redline.cache`` stays cheap and nothing connects
or loads at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redline._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from redline.cache.abilities import GetWithTtl as GetWithTtl
    from redline.cache.abilities import OverTier as OverTier
    from redline.cache.abilities import ReadBelowL1 as ReadBelowL1
    from redline.cache.abilities import RedisBacked as RedisBacked
    from redline.cache.abilities import SyncPeek as SyncPeek
    from redline.cache.base import MISSING as MISSING
    from redline.cache.base import Cache as Cache
    from redline.cache.base import CacheStats as CacheStats
    from redline.cache.base import Missing as Missing
    from redline.cache.base import TierStats as TierStats
    from redline.cache.bloom import BloomFilter as BloomFilter
    from redline.cache.bloom import RedisBloomFilter as RedisBloomFilter
    from redline.cache.bloom import bloom_parameters as bloom_parameters
    from redline.cache.breaker import BreakerState as BreakerState
    from redline.cache.breaker import BreakerStats as BreakerStats
    from redline.cache.breaker import CircuitBreaker as CircuitBreaker
    from redline.cache.decorator import CachedFunction as CachedFunction
    from redline.cache.decorator import cached as cached
    from redline.cache.invalidation import Invalidation as Invalidation
    from redline.cache.invalidation import InvalidationMessage as InvalidationMessage
    from redline.cache.invalidation import LocalInvalidation as LocalInvalidation
    from redline.cache.invalidation import RedisInvalidation as RedisInvalidation
    from redline.cache.keys import make_key as make_key
    from redline.cache.lock import DistributedLock as DistributedLock
    from redline.cache.lock import LockStats as LockStats
    from redline.cache.memory import MemoryCache as MemoryCache
    from redline.cache.redis import RedisCache as RedisCache
    from redline.cache.serialization import JsonSerializer as JsonSerializer
    from redline.cache.serialization import MsgpackSerializer as MsgpackSerializer
    from redline.cache.serialization import Serializer as Serializer
    from redline.cache.serialization import SignedPickleSerializer as SignedPickleSerializer
    from redline.cache.serialization import serializer_from_name as serializer_from_name
    from redline.cache.singleflight import SingleFlight as SingleFlight
    from redline.cache.singleflight import SingleFlightStats as SingleFlightStats
    from redline.cache.sinks import PostgresSink as PostgresSink
    from redline.cache.strategies import CacheAside as CacheAside
    from redline.cache.strategies import CacheAsideStats as CacheAsideStats
    from redline.cache.strategies import cache_aside as cache_aside
    from redline.cache.strategies import cache_aside_stats as cache_aside_stats
    from redline.cache.strategies import write_through as write_through
    from redline.cache.tiered import TieredCache as TieredCache
    from redline.cache.url import cache_from_url as cache_from_url
    from redline.cache.write_behind import MemoryQueue as MemoryQueue
    from redline.cache.write_behind import RedisStreamQueue as RedisStreamQueue
    from redline.cache.write_behind import RetryPolicy as RetryPolicy
    from redline.cache.write_behind import Sink as Sink
    from redline.cache.write_behind import WriteBehind as WriteBehind
    from redline.cache.write_behind import WriteBehindStats as WriteBehindStats
    from redline.cache.write_behind import WriteQueue as WriteQueue
    from redline.cache.write_behind import WriteRecord as WriteRecord

__all__, __getattr__, __dir__ = _lazy_exports(__name__)
