"""The cache seam: the :class:`Cache` protocol every backend implements, and its statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

__all__ = ["MISSING", "Cache", "CacheStats", "Missing", "TierStats"]


class Missing:
    """Type of :data:`MISSING`, the sentinel for "no value" (``None`` is a cacheable value)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


@dataclass(frozen=True, slots=True)
class TierStats:
    """Counters of one cache tier (``"memory"``, ``"redis"``, ...)."""

    name: str
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    evictions: int = 0
    size: int = 0
    #: Health events counted by the tier's :class:`~redline._events.EventLog`
    #: (``"failure:CAUSE"`` / ``"state:STATE"`` -> count), exported to ``/metrics``.
    events: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache's counters, one :class:`TierStats` per tier, L1 first."""

    tiers: tuple[TierStats, ...] = field(default_factory=tuple)

    def tier(self, name: str) -> TierStats:
        """The stats of the tier called *name*; ``KeyError`` if there is none."""
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    @property
    def hits(self) -> int:
        return sum(t.hits for t in self.tiers)

    @property
    def misses(self) -> int:
        return sum(t.misses for t in self.tiers)

    @property
    def sets(self) -> int:
        return sum(t.sets for t in self.tiers)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.tiers)


@runtime_checkable
class Cache(Protocol):
    """An async key/value cache. ``MISSING`` means absent; ``None`` is a value like any other.

    ``ttl`` is in seconds (float); ``None`` means the cache's default (no expiry unless the
    cache was built with one). Keys are ``str``; backends add their own namespace prefix.
    """

    async def get(self, key: str, default: Any = MISSING) -> Any: ...

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def exists(self, key: str) -> bool: ...

    async def incr(self, key: str, amount: int = 1) -> int: ...

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]: ...

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None: ...

    async def delete_pattern(self, pattern: str) -> int: ...

    async def ttl(self, key: str) -> float | None: ...

    async def invalidate_tags(self, *tags: str) -> int: ...

    async def clear(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    def stats(self) -> CacheStats: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
