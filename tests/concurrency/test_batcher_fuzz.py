"""MicroBatcher cancellation fuzz: many submits against a batch function that misbehaves.

Random client cancels, submit timeouts, a full queue, duplicates, and a batch function that
raises, raises ``CancelledError`` of its own or hangs past every submit timeout. Every submit
must end (result or error) within its deadline, the worker must be alive at the end, and no
task or unretrieved future may be left behind.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from redline.concurrency import MicroBatcher
from redline.exceptions import BatchFailed, BatchTimeout, Overloaded

SUBMITS = 10_000
CONCURRENCY = 256
HANG_SECONDS = 0.15  # a hanging batch outlasts every submit timeout below
MAX_SUBMIT_TIMEOUT = 0.1
UNTIMED_BOUND = 3.0  # an untimed submit that waits longer than this is hung
SLACK = 2.0  # scheduling slack on a loaded box before a timed submit counts as hung


class FuzzError(Exception):
    """The batch function's own failure."""


@dataclass
class Report:
    outcomes: Counter[str] = field(default_factory=Counter)
    hung: int = 0
    most_late: float = 0.0  # seconds a timed submit ended after its timeout, at worst
    unexpected: list[str] = field(default_factory=list)
    loop_errors: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"submits={sum(self.outcomes.values())} hung={self.hung} "
            f"most_late={self.most_late * 1000:.1f}ms "
            f"unexpected={len(self.unexpected)} loop_errors={len(self.loop_errors)} "
            f"outcomes={dict(sorted(self.outcomes.items()))}"
        )


def _misbehave(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.03:
        return "error"
    if roll < 0.06:
        return "cancel"
    if roll < 0.08:
        return "hang"
    return "ok"


def _async_batch_fn(rng: random.Random, *, forever: bool = False) -> Any:
    async def batch(items: list[int]) -> list[int]:
        what = _misbehave(rng)
        await asyncio.sleep(0)
        if what == "error":
            raise FuzzError("batch failed")
        if what == "cancel":
            raise asyncio.CancelledError("inner call cancelled")
        if what == "hang":
            if forever:
                await asyncio.Event().wait()  # only batch_timeout ends this call
            await asyncio.sleep(HANG_SECONDS)
        return [item * 2 for item in items]

    return batch


def _sync_batch_fn(rng: random.Random) -> Any:
    def batch(items: list[int]) -> list[int]:
        what = _misbehave(rng)
        if what == "error":
            raise FuzzError("batch failed")
        if what == "cancel":
            raise asyncio.CancelledError("inner call cancelled")
        if what == "hang":
            time.sleep(HANG_SECONDS)
        return [item * 2 for item in items]

    return batch


async def _client(
    batcher: MicroBatcher[int, int],
    rng: random.Random,
    gate: asyncio.Semaphore,
    report: Report,
) -> None:
    item = rng.randrange(3000)  # some duplicates in flight at once: dedup joins them
    timeout = rng.uniform(0.005, MAX_SUBMIT_TIMEOUT) if rng.random() < 0.6 else None
    cancel_after = rng.uniform(0.0, 0.02) if rng.random() < 0.15 else None
    limit = (timeout if timeout is not None else UNTIMED_BOUND) + SLACK
    async with gate:
        begun = time.monotonic()
        task = asyncio.ensure_future(batcher.submit(item, timeout=timeout))
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(cancel_after, task.cancel)
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done:
            report.hung += 1
            task.cancel()
            await asyncio.wait({task})
        if timeout is not None:
            report.most_late = max(report.most_late, time.monotonic() - begun - timeout)
    if task.cancelled():
        report.outcomes["hung" if not done else "cancelled"] += 1
        if done and cancel_after is None:
            report.unexpected.append(f"submit({item}) cancelled without a client cancel")
        return
    exc = task.exception()
    if exc is None:
        report.outcomes["ok"] += 1
        if task.result() != item * 2:
            report.unexpected.append(f"submit({item}) returned {task.result()!r}")
    elif isinstance(exc, BatchTimeout) and (timeout is not None or "batch_timeout" in str(exc)):
        report.outcomes["timeout"] += 1
    elif isinstance(exc, FuzzError | BatchFailed | Overloaded):
        report.outcomes[type(exc).__name__] += 1
    else:
        report.outcomes[type(exc).__name__] += 1
        report.unexpected.append(f"submit({item}) raised {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("kind", ["async", "sync", "async-retry", "async-batch-timeout"])
async def test_fuzzed_cancels_errors_and_hangs_never_hang_a_submit_or_kill_the_worker(
    kind: str,
) -> None:
    loop = asyncio.get_running_loop()
    report = Report()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: report.loop_errors.append(context))
    tasks_before = asyncio.all_tasks()
    rng = random.Random(f"batcher-fuzz-{kind}")
    forever = kind == "async-batch-timeout"  # hangs end only at the batch timeout
    batch_fn = _sync_batch_fn(rng) if kind == "sync" else _async_batch_fn(rng, forever=forever)
    batcher: MicroBatcher[int, int] = MicroBatcher(
        batch_fn,
        max_batch_size=32,
        max_wait=0.001,
        max_queue=224,  # below CONCURRENCY: some submits meet a full queue
        dedup=True,
        retry_individually=kind == "async-retry",
        batch_timeout=HANG_SECONDS if forever else None,
        name=f"fuzz-{kind}",
    )
    try:
        await batcher.start()
        gate = asyncio.Semaphore(CONCURRENCY)
        await asyncio.gather(*(_client(batcher, rng, gate, report) for _ in range(SUBMITS)))
        alive = batcher.health().alive
        await asyncio.wait_for(batcher.close(), timeout=30)
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        leaked = asyncio.all_tasks() - tasks_before
    finally:
        loop.set_exception_handler(previous_handler)
    print(f"\n{kind}: {report.line()} alive={alive} leaked_tasks={len(leaked)}")
    assert sum(report.outcomes.values()) == SUBMITS
    assert report.hung == 0, report.line()
    assert report.unexpected == [], report.unexpected[:5]
    assert alive, report.line()
    assert leaked == set(), leaked
    assert report.loop_errors == [], report.loop_errors[:3]
    # the fuzz really exercised every path
    for outcome in ("ok", "timeout", "cancelled", "Overloaded"):
        assert report.outcomes[outcome] > 0, (outcome, report.line())
    failed = report.outcomes["FuzzError"], report.outcomes["BatchFailed"]
    if kind == "async-retry":  # retried alone, most items of a failed batch succeed
        assert sum(failed) > 0, report.line()
    else:
        assert min(failed) > 0, report.line()
