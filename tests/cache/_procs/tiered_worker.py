"""Subprocess worker: a TieredCache process whose L1 holds a key another process rewrites.

``python -m tests.cache._procs.tiered_worker URL NAMESPACE CHANNEL KEY`` reads KEY (filling L1),
prints ``ready <json>``, then re-reads KEY (L1 first) for up to 10 s until it changes and prints
``changed <json>`` — or ``stale <json>`` if the L1 copy was never invalidated.
"""

from __future__ import annotations

import asyncio
import json
import sys

from redline.cache.invalidation import RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.tiered import TieredCache


async def main(url: str, namespace: str, channel: str, key: str) -> None:
    cache = TieredCache(
        MemoryCache(),
        RedisCache.from_url(url, namespace=namespace),
        invalidation=RedisInvalidation(url, channel),
        l1_ttl=300,
    )
    async with cache:
        first = await cache.get(key)
        print("ready", json.dumps(first), flush=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        value = first
        while loop.time() < deadline and value == first:
            await asyncio.sleep(0.02)
            value = await cache.get(key)
        print("changed" if value != first else "stale", json.dumps(value), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
