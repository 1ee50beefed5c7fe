"""redline.concurrency: bounded gather, streaming map, offloading, rate limits, micro-batching.

Example::

    from redline.concurrency import MicroBatcher, RateLimiter

    limiter = RateLimiter(100, per=1.0)
    async with limiter:
        ...
"""

from redline.concurrency.batcher import BatcherHealth, BatcherStats, BatchRecord, MicroBatcher
from redline.concurrency.ratelimit import RateLimiter, RateLimiterStats
from redline.concurrency.redis_ratelimit import RedisRateLimiter

__all__ = [
    "BatchRecord",
    "BatcherHealth",
    "BatcherStats",
    "MicroBatcher",
    "RateLimiter",
    "RateLimiterStats",
    "RedisRateLimiter",
]
