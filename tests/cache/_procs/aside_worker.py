"""Subprocess worker: N concurrent ``cache_aside(..., lock=...)`` callers of one key.

Run as ``python -m tests.cache._procs.aside_worker URL NAMESPACE KEY [options]``; prints one JSON
line ``{"values": [...distinct...], "errors": [...], "count": N}``. The loader INCRs
``<counter>`` (so the test counts loader bodies across processes), SETs ``<loading>`` to say it
is inside the body, sleeps ``--body`` seconds and returns ``{"by": pid}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from redis.asyncio import Redis

from redline.cache.lock import DistributedLock
from redline.cache.redis import RedisCache
from redline.cache.strategies import cache_aside


async def main(args: argparse.Namespace) -> None:
    cache = RedisCache.from_url(args.url, namespace=args.namespace)
    raw = Redis.from_url(args.url)

    async def loader() -> dict[str, int]:
        await raw.incr(args.counter)
        await raw.set(args.loading, os.getpid())
        await asyncio.sleep(args.body)
        return {"by": os.getpid()}

    def lock_for(key: str) -> DistributedLock:
        name = f"{args.namespace}:lock:{{{key}}}"
        return DistributedLock(cache.client, name, lease=args.lease, wait_timeout=60.0)

    delay = args.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)

    async def call() -> object:
        return await cache_aside(cache, args.key, loader, ttl=60, lock=lock_for)

    results = await asyncio.gather(*(call() for _ in range(args.callers)), return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    values = [r for r in results if not isinstance(r, BaseException)]
    distinct = [json.loads(v) for v in sorted({json.dumps(v, sort_keys=True) for v in values})]
    print(json.dumps({"values": distinct, "errors": errors, "count": len(results)}), flush=True)
    await raw.aclose()
    await cache.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("namespace")
    parser.add_argument("key")
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--body", type=float, default=0.5)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--counter", default="counter")
    parser.add_argument("--loading", default="loading")
    asyncio.run(main(parser.parse_args(sys.argv[1:])))
