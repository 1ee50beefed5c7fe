"""The pending side of a MicroBatcher: FIFO queues per group, in-flight dedup, batch taking."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Any

__all__ = ["BatchQueue", "Entry"]


class Entry:
    """One distinct queued item and the callers waiting for its result."""

    __slots__ = ("cost", "enqueued_at", "group", "item", "key", "seq", "started", "waiters")

    def __init__(
        self, item: Any, key: Hashable | None, group: Hashable, cost: int, seq: int, now: float
    ) -> None:
        self.item = item
        self.key = key
        self.group = group
        self.cost = cost
        self.seq = seq
        self.enqueued_at = now
        self.started = False
        self.waiters: list[asyncio.Future[Any]] = []


class BatchQueue:
    """Entries waiting for a batch, one FIFO per group; ``depth`` counts unstarted entries."""

    def __init__(self, max_batch_size: int, max_batch_cost: int | None) -> None:
        self._max_batch_size = max_batch_size
        self._max_batch_cost = max_batch_cost
        self._groups: dict[Hashable, deque[Entry]] = {}
        self._by_key: dict[Hashable, Entry] = {}
        self._seq = itertools.count()
        self.depth = 0

    def live_duplicate(self, key: Hashable) -> Entry | None:
        """The in-flight entry for *key* that still has callers, if any."""
        entry = self._by_key.get(key)
        return entry if entry is not None and entry.waiters else None

    def push(
        self, item: Any, key: Hashable | None, group: Hashable, cost: int, now: float
    ) -> Entry:
        entry = Entry(item, key, group, cost, next(self._seq), now)
        self._groups.setdefault(group, deque()).append(entry)
        if key is not None:
            self._by_key[key] = entry
        self.depth += 1
        return entry

    def forget(self, entry: Entry) -> None:
        """Stop offering *entry* to duplicates (it has finished)."""
        if entry.key is not None and self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]

    def discard(self, entry: Entry) -> None:
        """Drop an entry nobody waits for any more, if it has not started."""
        if entry.started:
            return
        self.forget(entry)
        queue = self._groups.get(entry.group)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(entry)
            self.depth -= 1
        if not queue:
            del self._groups[entry.group]

    def oldest_group(self) -> tuple[bool, Hashable]:
        """``(True, group)`` of the group whose head is oldest (FIFO across groups)."""
        best: Hashable = None
        best_seq = -1
        found = False
        for group, queue in self._groups.items():
            if queue and (not found or queue[0].seq < best_seq):
                best, best_seq, found = group, queue[0].seq, True
        return found, best

    def group_size(self, group: Hashable) -> int:
        queue = self._groups.get(group)
        return len(queue) if queue is not None else 0

    def head_enqueued_at(self, group: Hashable) -> float:
        return self._groups[group][0].enqueued_at

    def take(self) -> list[Entry]:
        """The next batch: from the oldest group, up to the size and cost caps.

        An entry costlier than the whole budget still runs (alone) rather than starve.
        """
        found, group = self.oldest_group()
        if not found:
            return []
        queue = self._groups[group]
        batch: list[Entry] = []
        cost = 0
        limit = self._max_batch_cost
        while queue and len(batch) < self._max_batch_size:
            entry = queue[0]
            if limit is not None and batch and cost + entry.cost > limit:
                break
            queue.popleft()
            entry.started = True
            cost += entry.cost
            batch.append(entry)
        if not queue:
            del self._groups[group]
        self.depth -= len(batch)
        return batch

    def clear(self) -> list[Entry]:
        """Remove and return every queued entry."""
        entries = [entry for queue in self._groups.values() for entry in queue]
        self._groups.clear()
        self.depth = 0
        return entries
