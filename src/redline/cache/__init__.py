"""redline.cache: tiered async caching (memory L1, Redis / Redis Cluster L2) and its tools.

>>> from redline.cache import MemoryCache, RedisCache, TieredCache, cached, cache_from_url
>>> cache = cache_from_url("redis://127.0.0.1:6379/0?tiered=1&namespace=app")

Names are imported on first use (PEP 562), so ``import redline.cache`` stays cheap and
nothing connects or loads at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redline._lazy import lazy_exports

if TYPE_CHECKING:
    from redline.cache.base import MISSING, Cache, CacheStats, Missing, TierStats
    from redline.cache.bloom import BloomFilter, RedisBloomFilter, bloom_parameters
    from redline.cache.breaker import BreakerState, BreakerStats, CircuitBreaker
    from redline.cache.decorator import CachedFunction, cached
    from redline.cache.invalidation import (
        Invalidation,
        InvalidationMessage,
        LocalInvalidation,
        RedisInvalidation,
    )
    from redline.cache.keys import make_key
    from redline.cache.lock import DistributedLock, LockStats
    from redline.cache.memory import MemoryCache
    from redline.cache.redis import RedisCache
    from redline.cache.serialization import (
        JsonSerializer,
        MsgpackSerializer,
        Serializer,
        SignedPickleSerializer,
        serializer_from_name,
    )
    from redline.cache.singleflight import SingleFlight, SingleFlightStats
    from redline.cache.sinks import PostgresSink
    from redline.cache.strategies import (
        CacheAside,
        CacheAsideStats,
        cache_aside,
        cache_aside_stats,
        write_through,
    )
    from redline.cache.tiered import TieredCache
    from redline.cache.url import cache_from_url
    from redline.cache.write_behind import (
        MemoryQueue,
        RedisStreamQueue,
        RetryPolicy,
        Sink,
        WriteBehind,
        WriteBehindStats,
        WriteQueue,
        WriteRecord,
    )

_EXPORTS: dict[str, str] = {
    "MISSING": ".base",
    "Cache": ".base",
    "CacheStats": ".base",
    "Missing": ".base",
    "TierStats": ".base",
    "BloomFilter": ".bloom",
    "RedisBloomFilter": ".bloom",
    "bloom_parameters": ".bloom",
    "BreakerState": ".breaker",
    "BreakerStats": ".breaker",
    "CircuitBreaker": ".breaker",
    "CachedFunction": ".decorator",
    "cached": ".decorator",
    "Invalidation": ".invalidation",
    "InvalidationMessage": ".invalidation",
    "LocalInvalidation": ".invalidation",
    "RedisInvalidation": ".invalidation",
    "make_key": ".keys",
    "DistributedLock": ".lock",
    "LockStats": ".lock",
    "MemoryCache": ".memory",
    "RedisCache": ".redis",
    "JsonSerializer": ".serialization",
    "MsgpackSerializer": ".serialization",
    "Serializer": ".serialization",
    "SignedPickleSerializer": ".serialization",
    "serializer_from_name": ".serialization",
    "SingleFlight": ".singleflight",
    "SingleFlightStats": ".singleflight",
    "CacheAside": ".strategies",
    "CacheAsideStats": ".strategies",
    "cache_aside": ".strategies",
    "cache_aside_stats": ".strategies",
    "write_through": ".strategies",
    "TieredCache": ".tiered",
    "cache_from_url": ".url",
    "PostgresSink": ".sinks",
    "MemoryQueue": ".write_behind",
    "RedisStreamQueue": ".write_behind",
    "RetryPolicy": ".write_behind",
    "Sink": ".write_behind",
    "WriteBehind": ".write_behind",
    "WriteBehindStats": ".write_behind",
    "WriteQueue": ".write_behind",
    "WriteRecord": ".write_behind",
}

__all__ = [
    "MISSING",
    "BloomFilter",
    "BreakerState",
    "BreakerStats",
    "Cache",
    "CacheAside",
    "CacheAsideStats",
    "CacheStats",
    "CachedFunction",
    "CircuitBreaker",
    "DistributedLock",
    "Invalidation",
    "InvalidationMessage",
    "JsonSerializer",
    "LocalInvalidation",
    "LockStats",
    "MemoryCache",
    "MemoryQueue",
    "Missing",
    "MsgpackSerializer",
    "PostgresSink",
    "RedisBloomFilter",
    "RedisCache",
    "RedisInvalidation",
    "RedisStreamQueue",
    "RetryPolicy",
    "Serializer",
    "SignedPickleSerializer",
    "SingleFlight",
    "SingleFlightStats",
    "Sink",
    "TierStats",
    "TieredCache",
    "WriteBehind",
    "WriteBehindStats",
    "WriteQueue",
    "WriteRecord",
    "bloom_parameters",
    "cache_aside",
    "cache_aside_stats",
    "cache_from_url",
    "cached",
    "make_key",
    "serializer_from_name",
    "write_through",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
