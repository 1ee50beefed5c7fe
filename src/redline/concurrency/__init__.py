"""redline.concurrency: bounded gather, streaming map, offloading, rate limits, micro-batching.

Example::

    from redline.concurrency import gather_limited, RateLimiter

    limiter = RateLimiter(100, per=1.0)
    async with limiter:
        pages = await gather_limited((fetch(u) for u in urls), limit=10)
"""

from typing import TYPE_CHECKING

from redline._lazy import lazy_exports as _lazy_exports
from redline.concurrency.amap import amap as amap
from redline.concurrency.batcher import BatcherHealth as BatcherHealth
from redline.concurrency.batcher import BatcherStats as BatcherStats
from redline.concurrency.batcher import BatchRecord as BatchRecord
from redline.concurrency.batcher import MicroBatcher as MicroBatcher
from redline.concurrency.gather import gather_limited as gather_limited
from redline.concurrency.offload import Offloader as Offloader
from redline.concurrency.offload import OffloaderStats as OffloaderStats
from redline.concurrency.offload import current_offloader as current_offloader
from redline.concurrency.offload import run_in_process as run_in_process
from redline.concurrency.offload import run_in_thread as run_in_thread
from redline.concurrency.ratelimit import RateLimiter as RateLimiter
from redline.concurrency.ratelimit import RateLimiterStats as RateLimiterStats

if TYPE_CHECKING:  # pulls in redis-py: imported on first use
    from redline.concurrency.redis_ratelimit import RedisRateLimiter as RedisRateLimiter

__all__, __getattr__, __dir__ = _lazy_exports(__name__)
