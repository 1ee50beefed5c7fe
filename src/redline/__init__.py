"""redline: make AI inference APIs fast and keep them up.

>>> from redline import MemoryCache, cached, MicroBatcher, gather_limited
>>> cache = MemoryCache(max_entries=10_000)
>>> @cached(cache, ttl=300)
... async def embed(text: str) -> list[float]: ...

The root holds what the README's first examples use; everything else lives in its domain's
package, each with a curated ``__all__``:

* :mod:`redline.cache` — caches, decorator, strategies, protections, write-behind, stats;
* :mod:`redline.concurrency` — bounded gather, streaming map, offloading, rate limits, batching;
* :mod:`redline.serve` — the embeddings API server and its models;
* :mod:`redline.gateway` — redline in front of OpenAI-compatible upstreams;
* :mod:`redline.lb` — nginx configuration and the cluster supervisor;
* :mod:`redline.bench` — the load generator and its reports;
* :mod:`redline.exceptions` — every exception, all rooted in :class:`RedlineError`.

Each public name is listed once, as a ``from M import N as N`` re-export (see
:mod:`redline._lazy`). Exceptions are imported now (they are light); the rest sit under
``TYPE_CHECKING`` so type checkers see them, and are imported on first use (PEP 562): ``import
redline`` connects to nothing, loads no model and does not import FastAPI, torch or redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redline._lazy import lazy_exports as _lazy_exports
from redline.exceptions import BatchTimeout as BatchTimeout
from redline.exceptions import CacheUnavailable as CacheUnavailable
from redline.exceptions import ConfigError as ConfigError
from redline.exceptions import Overloaded as Overloaded
from redline.exceptions import RateLimited as RateLimited
from redline.exceptions import RedlineError as RedlineError

if TYPE_CHECKING:
    from redline.cache import MemoryCache as MemoryCache
    from redline.cache import RedisCache as RedisCache
    from redline.cache import TieredCache as TieredCache
    from redline.cache import WriteBehind as WriteBehind
    from redline.cache import cache_aside as cache_aside
    from redline.cache import cache_from_url as cache_from_url
    from redline.cache import cached as cached
    from redline.cache import write_through as write_through
    from redline.concurrency import MicroBatcher as MicroBatcher
    from redline.concurrency import Offloader as Offloader
    from redline.concurrency import RateLimiter as RateLimiter
    from redline.concurrency import amap as amap
    from redline.concurrency import gather_limited as gather_limited

__version__ = "0.1.0"

__all__, __getattr__, __dir__ = _lazy_exports(__name__)
