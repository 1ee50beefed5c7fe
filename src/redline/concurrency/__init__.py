"""redline.concurrency: bounded gather, streaming map, offloading, rate limits, micro-batching.

Example::

    from redline.concurrency import MicroBatcher, gather_limited

    results = await gather_limited((fetch(u) for u in urls), limit=10)
"""

from redline.concurrency.batcher import BatcherHealth, BatcherStats, BatchRecord, MicroBatcher

__all__ = [
    "BatchRecord",
    "BatcherHealth",
    "BatcherStats",
    "MicroBatcher",
]
