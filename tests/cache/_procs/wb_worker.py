"""Subprocess worker: acknowledged write-behind writes whose flush never completes.

``python -m tests.cache._procs.wb_worker URL STREAM GROUP CONSUMER --records N --keys K`` writes
``k{i % K} = {"i": i}`` for i in range(N) through a :class:`RedisStreamQueue`; its sink blocks
forever, so the first batch sits read-but-unacknowledged and the rest unread. When every write
is acknowledged and a batch is in flight it prints ``ready`` and waits to be SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from redis.asyncio import Redis

from redline.cache.write_behind import RedisStreamQueue, WriteBehind, WriteRecord


async def main(args: argparse.Namespace) -> None:
    client = Redis.from_url(args.url)
    queue = RedisStreamQueue(client, args.stream, args.group, args.consumer)
    never = asyncio.Event()

    async def stuck_sink(batch: list[WriteRecord]) -> None:
        await never.wait()

    wb = WriteBehind(None, stuck_sink, queue=queue, max_batch=50, max_interval=0.05)
    for i in range(args.records):
        await wb.write(f"k{i % args.keys}", {"i": i})
    while True:  # until the flusher has a batch in flight (read, not acknowledged)
        summary = await client.xpending(args.stream, args.group)
        if summary["pending"] > 0:
            break
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    await never.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("group")
    parser.add_argument("consumer")
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--keys", type=int, default=120)
    asyncio.run(main(parser.parse_args(sys.argv[1:])))
