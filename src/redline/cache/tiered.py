"""Two tiers as one cache: a fast in-process L1 over a shared L2, kept coherent across processes.

>>> cache = TieredCache(
...     MemoryCache(max_entries=50_000),
...     RedisCache.from_url("redis://127.0.0.1:6379"),
...     invalidation=RedisInvalidation("redis://127.0.0.1:6379"),
...     l1_ttl=30.0,
... )
>>> async with cache:
...     await cache.set("user:1", {"name": "ada"}, ttl=300)
...     await cache.get("user:1")     # L1 hit; other processes dropped their L1 copy

Reads try L1, then L2; an L2 hit fills L1 with the entry's *remaining* L2 TTL (capped by
``l1_ttl``), so L1 never outlives L2. Writes go to L2, then L1, then an invalidation message
tells every other instance (any process) on the channel to drop its L1 copy.

Degraded mode: an L2 that raises :class:`~redline.exceptions.CacheUnavailable` (Redis down,
breaker open) is counted in this tier's ``errors`` and never reaches the caller: reads serve
L1 or miss, ``set`` still writes L1, ``delete`` still deletes from L1. Only ``incr`` raises,
since a local count would be wrong. When the invalidation channel loses its link, L1 is
flushed at once and again when the link is back (messages sent meanwhile were lost), so L1
never serves a value another process has changed since the link came back. Values that a
read fetched from L2 while an invalidation arrived are not put into L1.

Tags go to both tiers; ``invalidate_tags`` clears the whole L1 here and in every other
process, because L1 copies filled from L2 do not know their tags (coarse but never stale).
``get_many`` fills L1 only when ``l1_ttl`` is set, since it does not learn remaining TTLs.
The TieredCache owns its tiers and channel: ``close()`` closes all three.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from redline.cache.base import MISSING, Cache, CacheStats, TierStats
from redline.cache.invalidation import Invalidation, InvalidationMessage
from redline.exceptions import CacheUnavailable

__all__ = ["TieredCache"]

logger = logging.getLogger(__name__)


class TieredCache:
    """L1 + L2 with cross-process L1 invalidation; see the module docstring.

    Parameters: ``l1`` (usually a :class:`~redline.cache.memory.MemoryCache`), ``l2`` (usually
    a :class:`~redline.cache.redis.RedisCache`), ``invalidation`` (the channel; ``None`` for a
    single process), ``l1_ttl`` (cap on how long a value lives in L1), ``name`` of this tier
    in :meth:`stats`.
    """

    def __init__(
        self,
        l1: Cache,
        l2: Cache,
        *,
        invalidation: Invalidation | None = None,
        l1_ttl: float | None = None,
        name: str = "tiered",
    ) -> None:
        if l1_ttl is not None and l1_ttl <= 0:
            raise ValueError(f"l1_ttl must be > 0 or None, got {l1_ttl}")
        if l1 is l2:
            raise ValueError("l1 and l2 must be two different caches")
        self.l1 = l1
        self.l2 = l2
        self.invalidation = invalidation
        self.l1_ttl = l1_ttl
        self.name = name
        self.instance_id = uuid.uuid4().hex
        self._peek: Callable[[str, Any], Any] | None = getattr(l1, "get_nowait", None)
        self._started = invalidation is None
        # Bumped by every invalidation and local write: an L2 read that overlapped one
        # must not fill L1 with what may already be stale.
        self._generation = 0
        self._l2_errors = 0
        self._invalidations = 0
        if invalidation is not None:
            invalidation.subscribe(self._on_invalidation)

    def __repr__(self) -> str:
        link = "none" if self.invalidation is None else self.invalidation.connected
        return (
            f"<TieredCache name={self.name!r} l1={self.l1!r} l2={self.l2!r} "
            f"invalidation_connected={link} l2_errors={self._l2_errors}>"
        )

    async def start(self) -> None:
        """Start the invalidation subscriber (done on first use, and by ``async with``)."""
        if not self._started and self.invalidation is not None:
            self._started = True
            await self.invalidation.start()

    # -- reads -------------------------------------------------------------------------

    def get_nowait(self, key: str, default: Any = MISSING) -> Any:
        """L1 only, synchronously (the decorator's hot path); ``default`` on an L1 miss."""
        if self._peek is None:
            return default
        return self._peek(key, default)

    @property
    def l1_peek(self) -> Callable[[str, Any], Any] | None:
        """L1's own synchronous ``get_nowait`` (``None`` if it has none), for hot paths."""
        return self._peek

    async def get_below_l1(self, key: str, default: Any = MISSING) -> Any:
        """The rest of :meth:`get` after :meth:`get_nowait` missed: L2, filling L1."""
        if self._peek is None:
            return await self.get(key, default)
        value, _ = await self._read_l2(key, default)
        return value

    async def get(self, key: str, default: Any = MISSING) -> Any:
        value = await self.l1.get(key, MISSING)
        if value is not MISSING:
            return value
        value, _ = await self._read_l2(key, default)
        return value

    async def get_with_ttl(self, key: str, default: Any = MISSING) -> tuple[Any, float | None]:
        """``(value, remaining TTL or None)``; the TTL comes from L2 (L1 when L2 is down)."""
        l1_get_with_ttl = getattr(self.l1, "get_with_ttl", None)
        if l1_get_with_ttl is not None:
            value, remaining = await l1_get_with_ttl(key, MISSING)
            if value is not MISSING:
                return value, remaining
        return await self._read_l2(key, default)

    async def _read_l2(self, key: str, default: Any) -> tuple[Any, float | None]:
        await self.start()
        generation = self._generation
        try:
            l2_get_with_ttl = getattr(self.l2, "get_with_ttl", None)
            if l2_get_with_ttl is not None:
                value, remaining = await l2_get_with_ttl(key, MISSING)
            else:
                value, remaining = await self.l2.get(key, MISSING), None
        except CacheUnavailable as exc:
            self._l2_failed("get", exc)
            return default, None
        if value is MISSING:
            return default, None
        ttl = remaining if l2_get_with_ttl is not None else self.l1_ttl
        if ttl is None or (self.l1_ttl is not None and ttl > self.l1_ttl):
            ttl = self.l1_ttl
        if generation == self._generation and (ttl is None or ttl > 0):
            await self.l1.set(key, value, ttl)
        return value, remaining

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        found = await self.l1.get_many(wanted)
        rest = [key for key in wanted if key not in found]
        if not rest:
            return found
        await self.start()
        generation = self._generation
        try:
            below = await self.l2.get_many(rest)
        except CacheUnavailable as exc:
            self._l2_failed("get_many", exc)
            return found
        if below and self.l1_ttl is not None and generation == self._generation:
            await self.l1.set_many(below, self.l1_ttl)
        found.update(below)
        return found

    async def exists(self, key: str) -> bool:
        if await self.l1.exists(key):
            return True
        try:
            return await self.l2.exists(key)
        except CacheUnavailable as exc:
            self._l2_failed("exists", exc)
            return False

    async def ttl(self, key: str) -> float | None:
        try:
            return await self.l2.ttl(key)
        except CacheUnavailable as exc:
            self._l2_failed("ttl", exc)
            return await self.l1.ttl(key)

    # -- writes ------------------------------------------------------------------------

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        await self.start()
        tags = tuple(tags)
        self._generation += 1
        try:
            await self.l2.set(key, value, ttl, tags=tags)
        except CacheUnavailable as exc:
            self._l2_failed("set", exc)
        l1_ttl = ttl if ttl is not None else getattr(self.l2, "default_ttl", None)
        if self.l1_ttl is not None and (l1_ttl is None or l1_ttl > self.l1_ttl):
            l1_ttl = self.l1_ttl
        await self.l1.set(key, value, l1_ttl, tags=tags)
        await self._publish(keys=(key,))

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        await self.start()
        self._generation += 1
        try:
            await self.l2.set_many(mapping, ttl)
        except CacheUnavailable as exc:
            self._l2_failed("set_many", exc)
        l1_ttl = ttl if ttl is not None else getattr(self.l2, "default_ttl", None)
        if self.l1_ttl is not None and (l1_ttl is None or l1_ttl > self.l1_ttl):
            l1_ttl = self.l1_ttl
        await self.l1.set_many(mapping, l1_ttl)
        await self._publish(keys=tuple(mapping))

    async def incr(self, key: str, amount: int = 1) -> int:
        """Atomic in L2 (raises ``CacheUnavailable`` when L2 is down); drops L1 copies."""
        await self.start()
        self._generation += 1
        value = await self.l2.incr(key, amount)
        await self.l1.delete(key)
        await self._publish(keys=(key,))
        return value

    async def delete(self, key: str) -> bool:
        await self.start()
        self._generation += 1
        deleted = False
        try:
            deleted = await self.l2.delete(key)
        except CacheUnavailable as exc:
            self._l2_failed("delete", exc)
        deleted = await self.l1.delete(key) or deleted
        await self._publish(keys=(key,))
        return deleted

    async def delete_pattern(self, pattern: str) -> int:
        """Delete matching keys in both tiers; the count is L2's (L1's when L2 is down)."""
        await self.start()
        self._generation += 1
        l2_count: int | None = None
        try:
            l2_count = await self.l2.delete_pattern(pattern)
        except CacheUnavailable as exc:
            self._l2_failed("delete_pattern", exc)
        l1_count = await self.l1.delete_pattern(pattern)
        await self._publish(patterns=(pattern,))
        return l1_count if l2_count is None else l2_count

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete tagged entries in L2 and clear L1 (see the module docstring); L2's count."""
        await self.start()
        self._generation += 1
        count: int | None = None
        try:
            count = await self.l2.invalidate_tags(*tags)
        except CacheUnavailable as exc:
            self._l2_failed("invalidate_tags", exc)
        l1_count = await self.l1.invalidate_tags(*tags)
        await self.l1.clear()
        await self._publish(tags=tags)
        return l1_count if count is None else count

    async def clear(self) -> None:
        await self.start()
        self._generation += 1
        try:
            await self.l2.clear()
        except CacheUnavailable as exc:
            self._l2_failed("clear", exc)
        await self.l1.clear()
        await self._publish(flush=True)

    # -- coherence ---------------------------------------------------------------------

    async def _publish(
        self,
        *,
        keys: tuple[str, ...] = (),
        patterns: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
        flush: bool = False,
    ) -> None:
        if self.invalidation is None:
            return
        message = InvalidationMessage(
            origin=self.instance_id, keys=keys, patterns=patterns, tags=tags, flush=flush
        )
        try:
            await self.invalidation.publish(message)
        except Exception:
            logger.exception("publishing an invalidation from %s failed", self.name)

    async def _on_invalidation(self, message: InvalidationMessage) -> None:
        if message.origin == self.instance_id:
            return
        self._generation += 1
        self._invalidations += 1
        if message.flush or message.tags:
            await self.l1.clear()
            return
        for key in message.keys:
            await self.l1.delete(key)
        for pattern in message.patterns:
            await self.l1.delete_pattern(pattern)

    def _l2_failed(self, what: str, exc: CacheUnavailable) -> None:
        self._l2_errors += 1
        logger.debug("%s: L2 %s failed, serving from L1: %s", self.name, what, exc)

    # -- lifecycle and introspection ---------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", "l1": ..., "l2": ..., "invalidation": ...}``."""
        await self.start()
        l1 = await self._tier_health(self.l1)
        l2 = await self._tier_health(self.l2)
        link = None if self.invalidation is None else self.invalidation.connected
        if l1.get("status") != "ok":
            status = "down"
        elif l2.get("status") != "ok" or link is False:
            status = "degraded"
        else:
            status = "ok"
        return {"status": status, "name": self.name, "l1": l1, "l2": l2, "invalidation": link}

    @staticmethod
    async def _tier_health(tier: Cache) -> dict[str, Any]:
        try:
            return await tier.health()
        except Exception as exc:  # health must report, never raise
            return {"status": "down", "error": str(exc)}

    def stats(self) -> CacheStats:
        """L1's tiers, L2's tiers, then this one (``errors``: L2 failures absorbed here;
        ``evictions``: invalidation messages applied to L1)."""
        own = TierStats(name=self.name, errors=self._l2_errors, evictions=self._invalidations)
        return CacheStats(tiers=(*self.l1.stats().tiers, *self.l2.stats().tiers, own))

    async def close(self) -> None:
        try:
            if self.invalidation is not None:
                await self.invalidation.close()
        finally:
            try:
                await self.l2.close()
            finally:
                await self.l1.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
