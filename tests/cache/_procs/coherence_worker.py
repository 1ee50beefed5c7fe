"""Subprocess worker of the coherence checker: one TieredCache, M tasks of random operations.

``python -m tests.cache._procs.coherence_worker CONFIG_JSON`` builds the cache, prints
``ready``, then follows commands read from stdin, one a line:

* ``run SECONDS``: M tasks run random get / get_many / set / delete / delete_pattern /
  invalidate_tags on a small key set for SECONDS, recording every operation; prints
  ``done N``;
* ``settle``: waits until the invalidation link is up and nothing is left to publish; prints
  ``settled``;
* ``check``: compares L1 with L2 for every key, writes the history to the config's ``out``
  file and prints ``checked``; then the worker exits.

A history record is ``[op, key, value, start, end, ok, up]``: times from ``time.monotonic``
(one clock for every process of the machine); ``value`` is the value written, or the value
read (``None`` for a miss); ``ok`` is false when an L2 error was absorbed during the
operation (its effect on L2 is unknown); ``up`` is whether the invalidation link was up at
both ends without a reconnect in between.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from redline.cache.base import MISSING
from redline.cache.invalidation import RedisInvalidation
from redline.cache.memory import MemoryCache
from redline.cache.tiered import TieredCache
from redline.cache.url import cache_from_url
from redline.exceptions import CacheUnavailable

PATTERNS = ("k1*", "k[23]", "k?")


def build(cfg: dict[str, Any]) -> TieredCache:
    if cfg.get("tiered_url"):
        cache = cache_from_url(cfg["tiered_url"])
    else:
        invalidation = RedisInvalidation(
            [tuple(node) for node in cfg["inv_nodes"]],
            channel=cfg["channel"],
            backoff_initial=0.05,
            backoff_max=0.5,
        )
        cache = TieredCache(MemoryCache(), cache_from_url(cfg["l2_url"]), invalidation=invalidation)
    assert isinstance(cache, TieredCache)
    return cache


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.pid = int(cfg["pid"])
        self.keys = [f"k{i}" for i in range(int(cfg["keys"]))]
        self.cache = build(cfg)
        self.history: list[list[Any]] = []
        self.counter = 0
        self.stop = False
        self.max_write_s = 0.0

    def errors(self) -> int:
        return self.cache.l2_errors

    def link(self) -> tuple[bool, int]:
        channel = self.cache.invalidation
        assert isinstance(channel, RedisInvalidation)
        return channel.connected, channel.reconnects

    async def one(self, rng: random.Random) -> None:
        cache = self.cache
        key = rng.choice(self.keys)
        roll = rng.random()
        errors, (up, reconnects) = self.errors(), self.link()
        start = time.monotonic()
        records: list[list[Any]] = []
        if roll < 0.50:
            value = await cache.get(key)
            records.append(["get", key, None if value is MISSING else value])
        elif roll < 0.58:
            other = rng.choice(self.keys)
            found = await cache.get_many([key, other])
            records += [["get", k, found.get(k)] for k in dict.fromkeys((key, other))]
        elif roll < 0.83:
            self.counter += 1
            value = f"{self.pid}:{self.counter}"
            await cache.set(key, value, tags=[f"t{int(key[1:]) % 2}"])
            records.append(["set", key, value])
        elif roll < 0.91:
            await cache.delete(key)
            records.append(["delete", key, None])
        elif roll < 0.96:
            pattern = rng.choice(PATTERNS)
            await cache.delete_pattern(pattern)
            records.append(["delete_pattern", pattern, None])
        else:
            tag = rng.choice(("t0", "t1"))
            await cache.invalidate_tags(tag)
            records.append(["invalidate_tags", tag, None])
        end = time.monotonic()
        if records[0][0] != "get":
            self.max_write_s = max(self.max_write_s, end - start)
        ok = self.errors() == errors
        up_after, reconnects_after = self.link()
        link_up = up and up_after and reconnects == reconnects_after
        for record in records:
            self.history.append([*record, start, end, ok, link_up])

    async def task(self, index: int, deadline: float) -> None:
        rng = random.Random(f"{self.cfg['seed']}:{self.pid}:{index}")
        while time.monotonic() < deadline:
            await self.one(rng)  # TieredCache absorbs L2 errors: nothing here may raise
            await asyncio.sleep(0)

    async def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(self.task(i, deadline) for i in range(int(self.cfg["tasks"]))))

    async def settle(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = getattr(self.cache, "pending_invalidations", 0)
            if self.link()[0] and not pending:
                return
            await asyncio.sleep(0.02)

    async def check(self) -> dict[str, Any]:
        mismatches = []
        l1 = self.cache.l1
        assert isinstance(l1, MemoryCache)
        for key in self.keys:
            local = l1.get_nowait(key)
            if local is MISSING:
                continue
            for _ in range(50):
                try:
                    shared = await self.cache.l2.get(key)
                    break
                except CacheUnavailable:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("L2 did not answer the final check")
            if local != (None if shared is MISSING else shared):
                mismatches.append([key, local, None if shared is MISSING else shared])
        own = self.cache.stats().tier(self.cache.name)
        return {
            "pid": self.pid,
            "mismatches": mismatches,
            "ops": len(self.history),
            "max_write_s": self.max_write_s,
            "events": dict(own.events),
            "history": self.history,
        }


async def main(cfg: dict[str, Any]) -> None:
    worker = Worker(cfg)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with worker.cache:
        deadline = time.monotonic() + 30
        while not worker.link()[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        print("ready", flush=True)
        while line := (await reader.readline()).decode().split():
            if line[0] == "run":
                await worker.run(float(line[1]))
                print("done", len(worker.history), flush=True)
            elif line[0] == "settle":
                await worker.settle()
                print("settled", flush=True)
            elif line[0] == "check":
                report = await worker.check()
                await asyncio.to_thread(Path(cfg["out"]).write_text, json.dumps(report))
                print("checked", flush=True)
                break
        await worker.cache.clear()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
