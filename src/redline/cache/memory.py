"""The in-process L1 cache: LRU + per-entry TTL, bounded by entry count and approximate bytes.

>>> cache = MemoryCache(max_entries=1000, default_ttl=60.0)
>>> await cache.set("user:1", {"name": "ada"}, tags=["users"])
>>> await cache.get("user:1")
{'name': 'ada'}

Values are stored as objects (no serialisation). Mutation policy, so that no caller can
corrupt a cached value through what it set or what it got back:

* immutable values (``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``,
  and tuples/frozensets holding only such values) are stored and returned as they are;
* numpy arrays are stored as a read-only copy and returned as a read-only view (zero-copy);
* other values (``dict``, ``list``, ``set``, ``bytearray``, objects...) are copied on the
  way in and on the way out: a shallow copy when their items are immutable, else a
  structural copy (``copy.deepcopy`` for types it does not know).

Sizes are estimated with :func:`redline.cache._private.estimate_size` (``sys.getsizeof``
plus one level of contents; numpy ``nbytes``) plus the key. A value bigger than
``max_bytes`` on its own is not stored. Expired entries are never returned and are dropped
when touched or when they reach the LRU end; both expirations and capacity evictions count
as ``evictions``. Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self

from redline import _trace_hooks
from redline.cache._private import Copier, estimate_size, glob_matcher, prepare_for_storage
from redline.cache.base import MISSING, CacheStats, TierStats
from redline.exceptions import WrongValueType

__all__ = ["MemoryCache"]


class _Entry(NamedTuple):
    value: Any
    expires_at: float | None
    copier: Copier | None
    size: int
    tags: tuple[str, ...]


class MemoryCache:
    """An async, in-process LRU cache with per-entry TTL; see the module docstring.

    Parameters: ``max_entries`` and ``max_bytes`` (``None``: unbounded bytes) bound it;
    ``default_ttl`` applies to sets without a TTL (``None``: no expiry); ``ttl_jitter``
    (a fraction, 0.1 = +/-10%) spreads every TTL against expiry avalanches; ``timer`` is the
    clock (inject a fake one in tests).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int | None = 64 * 2**20,
        default_ttl: float | None = None,
        ttl_jitter: float = 0.0,
        timer: Callable[[], float] = time.monotonic,
        name: str = "memory",
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        if default_ttl is not None and default_ttl <= 0:
            raise ValueError(f"default_ttl must be > 0 or None, got {default_ttl}")
        if not 0.0 <= ttl_jitter < 1.0:
            raise ValueError(f"ttl_jitter must be >= 0 and < 1, got {ttl_jitter}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.default_ttl = default_ttl
        self.ttl_jitter = ttl_jitter
        self.name = name
        self._timer = timer
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._move_to_end = self._data.move_to_end
        self._tags: dict[str, set[str]] = {}
        self._bytes = 0
        self._hits = self._misses = self._sets = self._deletes = self._evictions = 0

    def __repr__(self) -> str:
        return (
            f"<MemoryCache name={self.name!r} size={len(self._data)}/{self.max_entries} "
            f"bytes={self._bytes} hits={self._hits} misses={self._misses}>"
        )

    def __len__(self) -> int:
        return len(self._data)

    # -- reads -------------------------------------------------------------------------

    def get_nowait(self, key: str, default: Any = MISSING) -> Any:
        """The synchronous hot path of :meth:`get`."""
        entry = self._data.get(key)
        if entry is None:
            self._misses += 1
            return default
        value, expires_at, copier, _, _ = entry
        if expires_at is not None and self._timer() >= expires_at:
            self._remove(key, entry)
            self._evictions += 1
            self._misses += 1
            return default
        self._move_to_end(key)
        self._hits += 1
        return value if copier is None else copier(value)

    def get_all_nowait(self, keys: Sequence[str], *, shared: bool = False) -> list[Any] | None:
        """The values of *keys*, in order, when every one is here and live (counted as hits
        of its distinct keys, as :meth:`get_many` counts them); ``None`` when any is not,
        with nothing counted or moved, so the caller can read them the usual way.

        With *shared*, the values as stored, not the copies (or read-only views) ``get``
        hands out: for a caller that only reads them, and may tell a value stored anew by
        its identity."""
        data = self._data
        entries = []
        now: float | None = None
        for key in keys:
            entry = data.get(key)
            if entry is None:
                return None
            if entry.expires_at is not None:
                now = self._timer() if now is None else now
                if now >= entry.expires_at:
                    return None  # the usual read drops it and counts the miss
            entries.append(entry)
        move = self._move_to_end
        for key in dict.fromkeys(keys):
            move(key)
            self._hits += 1
        if shared:
            return [entry.value for entry in entries]
        return [e.value if e.copier is None else e.copier(e.value) for e in entries]

    async def get(self, key: str, default: Any = MISSING) -> Any:
        return self.get_nowait(key, default)

    async def get_with_ttl(self, key: str, default: Any = MISSING) -> tuple[Any, float | None]:
        """``(value, remaining seconds or None if it never expires)``; ``(default, None)``."""
        entry = self._live(key)
        if entry is None:
            self._misses += 1
            return default, None
        self._data.move_to_end(key)
        self._hits += 1
        value = entry.value if entry.copier is None else entry.copier(entry.value)
        if entry.expires_at is None:
            return value, None
        return value, entry.expires_at - self._timer()

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key in keys:
            value = self.get_nowait(key)
            if value is not MISSING:
                found[key] = value
        _trace_hooks.cache_read(len(found), 0)
        return found

    async def exists(self, key: str) -> bool:
        return self._live(key) is not None

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - self._timer()

    # -- writes ------------------------------------------------------------------------

    def set_nowait(
        self, key: str, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """The synchronous body of :meth:`set`."""
        if ttl is None:
            ttl = self.default_ttl
        elif ttl <= 0:
            raise ValueError(f"ttl must be > 0 or None, got {ttl}")
        expires_at = None
        if ttl is not None:
            if self.ttl_jitter:
                ttl *= 1.0 + random.uniform(-self.ttl_jitter, self.ttl_jitter)
            expires_at = self._timer() + ttl
        stored, copier = prepare_for_storage(value)
        size = estimate_size(stored) + sys.getsizeof(key)
        tag_tuple = tuple(tags) if tags else ()
        old = self._data.get(key)
        if old is not None:
            self._remove(key, old)
        self._sets += 1
        if self.max_bytes is not None and size > self.max_bytes:
            return
        self._data[key] = _Entry(stored, expires_at, copier, size, tag_tuple)
        self._bytes += size
        for tag in tag_tuple:
            self._tags.setdefault(tag, set()).add(key)
        self._shrink()

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        self.set_nowait(key, value, ttl, tags=tags)

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        for key, value in mapping.items():
            self.set_nowait(key, value, ttl)

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add *amount* to an ``int`` value (a missing key starts at 0); keeps the TTL."""
        entry = self._live(key)
        if entry is None:
            self.set_nowait(key, amount)
            return amount
        if type(entry.value) is not int:
            raise WrongValueType(
                f"cannot incr {key!r}: its value is a {type(entry.value).__name__}, not an int"
            )
        value = entry.value + amount
        self._data[key] = entry._replace(value=value)
        self._data.move_to_end(key)
        self._sets += 1
        return value

    async def delete(self, key: str) -> bool:
        return self.delete_nowait(key)

    def delete_nowait(self, key: str) -> bool:
        """The synchronous body of :meth:`delete`."""
        entry = self._data.get(key)
        if entry is None:
            return False
        self._remove(key, entry)
        self._deletes += 1
        return entry.expires_at is None or entry.expires_at > self._timer()

    async def delete_pattern(self, pattern: str) -> int:
        """Delete every key matching the Redis glob *pattern*; the number deleted."""
        matches = glob_matcher(pattern)
        doomed = [key for key in self._data if matches(key)]
        return sum(self.delete_nowait(key) for key in doomed)

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete every entry set with any of *tags*; the number deleted."""
        doomed: set[str] = set()
        for tag in tags:
            doomed |= self._tags.get(tag, set())
        return sum(self.delete_nowait(key) for key in doomed)

    async def clear(self) -> None:
        self._data.clear()
        self._tags.clear()
        self._bytes = 0

    # -- lifecycle and introspection ---------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "name": self.name,
            "size": len(self._data),
            "bytes": self._bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
        }

    def stats(self) -> CacheStats:
        return CacheStats(
            tiers=(
                TierStats(
                    name=self.name,
                    hits=self._hits,
                    misses=self._misses,
                    sets=self._sets,
                    deletes=self._deletes,
                    errors=0,
                    evictions=self._evictions,
                    size=len(self._data),
                ),
            )
        )

    async def close(self) -> None:
        await self.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------

    def _live(self, key: str) -> _Entry | None:
        """The unexpired entry of *key* (dropping it if expired), without touching LRU order."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and self._timer() >= entry.expires_at:
            self._remove(key, entry)
            self._evictions += 1
            return None
        return entry

    def _remove(self, key: str, entry: _Entry) -> None:
        del self._data[key]
        self._bytes -= entry.size
        for tag in entry.tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def _shrink(self) -> None:
        data = self._data
        max_bytes = self.max_bytes
        while len(data) > self.max_entries or (max_bytes is not None and self._bytes > max_bytes):
            key = next(iter(data))
            self._remove(key, data[key])
            self._evictions += 1
