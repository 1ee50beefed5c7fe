"""redline.concurrency: bounded gather, streaming map, offloading, rate limits, micro-batching.

Example::

    from redline.concurrency import gather_limited, RateLimiter

    limiter = RateLimiter(100, per=1.0)
    async with limiter:
        pages = await gather_limited((fetch(u) for u in urls), limit=10)
"""

from redline.concurrency.amap import amap
from redline.concurrency.batcher import BatcherHealth, BatcherStats, BatchRecord, MicroBatcher
from redline.concurrency.gather import gather_limited
from redline.concurrency.offload import (
    Offloader,
    OffloaderStats,
    current_offloader,
    run_in_process,
    run_in_thread,
)
from redline.concurrency.ratelimit import RateLimiter, RateLimiterStats
from redline.concurrency.redis_ratelimit import RedisRateLimiter

__all__ = [
    "BatchRecord",
    "BatcherHealth",
    "BatcherStats",
    "MicroBatcher",
    "Offloader",
    "OffloaderStats",
    "RateLimiter",
    "RateLimiterStats",
    "RedisRateLimiter",
    "amap",
    "current_offloader",
    "gather_limited",
    "run_in_process",
    "run_in_thread",
]
