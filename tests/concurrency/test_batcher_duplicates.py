"""MicroBatcher's ``on_duplicate`` hook and ``BatchRecord.items``: what tracing needs to link a
request whose input joined an identical one in flight to the batch that computed it."""

from __future__ import annotations

import asyncio
from typing import Any

from redline.concurrency import BatchRecord, MicroBatcher


class Item:
    """A submitted item with an identity of its own (its key is its text)."""

    def __init__(self, text: str, request: int) -> None:
        self.text, self.request = text, request

    def __repr__(self) -> str:
        return f"Item({self.text!r}, {self.request})"


async def test_on_duplicate_names_the_item_in_flight_before_and_after_its_batch_started() -> None:
    gates = {"blocker": asyncio.Event(), "same": asyncio.Event()}
    batches: list[list[Item]] = []

    async def run(items: list[Item]) -> list[str]:
        batches.append(list(items))
        await gates[items[0].text].wait()
        return [item.text.upper() for item in items]

    joins: list[tuple[Item, Item]] = []
    records: list[BatchRecord] = []
    batcher: MicroBatcher[Item, str] = MicroBatcher(
        run,
        max_batch_size=1,  # "same" waits behind "blocker" until the gate opens
        dedup_key=lambda item: item.text,
        on_duplicate=lambda running, duplicate: joins.append((running, duplicate)),
        on_batch=records.append,
    )
    async with batcher:
        blocker, first = Item("blocker", 0), Item("same", 1)
        tasks = [asyncio.create_task(batcher.submit(item)) for item in (blocker, first)]
        await asyncio.sleep(0.01)
        queued = Item("same", 2)  # joins while the first "same" is still queued
        tasks.append(asyncio.create_task(batcher.submit(queued)))
        await asyncio.sleep(0.01)
        assert [[i.text for i in b] for b in batches] == [["blocker"]]
        gates["blocker"].set()
        while len(batches) < 2:
            await asyncio.sleep(0.001)
        running = Item("same", 3)  # joins while its batch runs
        tasks.append(asyncio.create_task(batcher.submit(running)))
        await asyncio.sleep(0.01)
        gates["same"].set()
        results = await asyncio.gather(*tasks)
    assert results == ["BLOCKER", "SAME", "SAME", "SAME"]
    assert joins == [(first, queued), (first, running)]
    assert [record.items for record in records] == [(blocker,), (first,)]


async def test_no_hook_no_items_needed_when_nothing_duplicates() -> None:
    seen: list[Any] = []
    async with MicroBatcher(
        lambda items: [x * 2 for x in items], dedup=True, on_duplicate=lambda a, b: seen.append(b)
    ) as batcher:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert seen == []
