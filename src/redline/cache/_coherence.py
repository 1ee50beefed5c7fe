"""Private: the bookkeeping that keeps a TieredCache's L1 from going back in time.

A :class:`FillGuard` numbers every change a TieredCache sees with one counter (a logical
clock): the start and the end of each local write or delete, each invalidation received,
each change not tied to keys (pattern deletes, tag invalidations, clears, link flushes).
It answers two questions:

* :meth:`may_fill` — may a value read from L2 by a read that began at ``since`` be stored in
  L1? Only if no change to that key was in flight at any moment of the read: no write to it
  is in flight now, and none started, ended or was announced after ``since``.
* :meth:`end_write` — may a write that just finished put its value in L1? Only if no other
  change to that key overlapped it, since then the order in which the two reached L2 is
  unknown (the caller drops the L1 copy instead; the next read refills it from L2).

The numbers are only compared, never stored in L1, so pruning is safe: forgetting a key
makes it look changed at the moment of the prune, which can only refuse a fill.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FillGuard"]


class FillGuard:
    """Logical clock of a TieredCache's changes; see the module docstring."""

    def __init__(self, *, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._clock = 0
        self._floor = 0  # every key forgotten by a prune counts as changed at this time
        self._changed: dict[str, int] = {}
        self._writing: dict[str, int] = {}
        self._global_writing = 0
        self._global_changed = 0
        self.refused_fills = 0

    def __repr__(self) -> str:
        return (
            f"<FillGuard clock={self._clock} keys={len(self._changed)} "
            f"writing={len(self._writing) + self._global_writing} refused={self.refused_fills}>"
        )

    def now(self) -> int:
        """The stamp a read takes before it asks L2."""
        return self._clock

    def may_fill(self, key: str, since: int) -> bool:
        """Whether a value of *key* read from L2 after *since* may go into L1."""
        fresh = (
            not self._global_writing
            and self._global_changed <= since
            and key not in self._writing
            and self._changed.get(key, self._floor) <= since
        )
        if not fresh:
            self.refused_fills += 1
        return fresh

    def begin_write(self, keys: Iterable[str]) -> int:
        """A write or delete of *keys* is about to reach L2; returns its stamp."""
        stamp = self._tick()
        for key in keys:
            self._changed[key] = stamp
            self._writing[key] = self._writing.get(key, 0) + 1
        return stamp

    def end_write(self, keys: Iterable[str], stamp: int) -> list[str]:
        """The write stamped *stamp* returned from L2; the keys whose value may go into L1."""
        alone = self._global_writing == 0 and self._global_changed < stamp
        end = self._tick()
        safe = []
        for key in keys:
            in_flight = self._writing.get(key, 0)
            if alone and in_flight == 1 and self._changed.get(key, self._floor) == stamp:
                safe.append(key)
            if in_flight > 1:
                self._writing[key] = in_flight - 1
            else:
                self._writing.pop(key, None)
            self._changed[key] = end
        self._prune()
        return safe

    def begin_global(self) -> None:
        """A change that may touch any key (pattern, tags, clear) is about to reach L2."""
        self._global_writing += 1
        self._global_changed = self._tick()

    def end_global(self) -> None:
        """The change announced by :meth:`begin_global` returned."""
        self._global_writing -= 1
        self._global_changed = self._tick()

    def changed(self, keys: Iterable[str]) -> None:
        """Another process changed *keys* (an invalidation message)."""
        stamp = self._tick()
        for key in keys:
            self._changed[key] = stamp
        self._prune()

    def changed_all(self) -> None:
        """Anything may have changed (a flush, a pattern or tag invalidation, a lost link)."""
        self._global_changed = self._tick()

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _prune(self) -> None:
        if len(self._changed) > self.max_keys:
            self._floor = self._tick()
            self._changed = dict.fromkeys(self._writing, self._floor)
