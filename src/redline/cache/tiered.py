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
``l1_ttl``), so L1 never outlives L2. Writes go to L2, then L1; the invalidation that tells
every other instance (any process) on the channel to drop its L1 copy is published in the
background (coalesced, bounded in time, behind its own circuit breaker), so a slow or
frozen Redis never holds a write up on it.

**Local coherence (a read-fill never goes back in time).** L1 is filled by reads and by
writes, and the two race: a read may fetch a value from L2, wait, and resume after a write
to the same key finished. A :class:`~redline.cache._coherence.FillGuard` numbers every
change this instance sees (the start and end of each local write or delete, each
invalidation received, each pattern / tag / clear / link flush) and lets a read fill L1
only if no change to its key was in flight at *any* moment between the read's start and
the fill. Why that suffices: a write W that completed before the fill either ended before
the read started — then the read's L2 request was sent after W's reply, so it saw W's
value or a later one — or it overlapped the read, and then it started or ended after the
read's stamp, or is still in flight at the fill, and the fill is refused. A write puts its
value in L1 only if no other change to the key overlapped it (otherwise their order in L2
is unknown, and it drops the L1 copy instead). ``get_many`` applies the same rule per key.
Invalidations received during a read count as changes, so they refuse the fill too. This
relies on L1 applying calls in the order they are made (:class:`MemoryCache` does: it never
suspends).

**Cross-process coherence.** Another process's L1 drops a key when this instance's message
reaches it, normally within one round trip of the write; a message the channel cannot take
is kept and sent later, a lost link flushes L1, and while it is down L1 entries live at most
``offline_l1_ttl`` seconds (:mod:`redline.cache._tiered_link` tells how).

Degraded mode: an L2 that raises :class:`~redline.exceptions.CacheUnavailable` (Redis down,
breaker open) is counted in this tier's ``errors`` and never reaches the caller: reads serve
L1 or miss, ``set`` still writes L1 (for ``offline_l1_ttl``, since L2 may or may not have
taken the value), ``delete`` still deletes from L1. Only ``incr`` raises, since a local
count would be wrong.

Tags go to both tiers; ``invalidate_tags`` clears the whole L1 here and in every other
process, because L1 copies filled from L2 do not know their tags (coarse but never stale).
``get_many`` fills L1 only when ``l1_ttl`` is set, since it does not learn remaining TTLs.
The TieredCache owns its tiers and channel: ``close()`` sends the pending invalidations
(within ``publish_timeout``) and closes all three.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from redline import _trace_hooks
from redline.cache._coherence import FillGuard
from redline.cache._tiered_link import InvalidationLink
from redline.cache.abilities import GetWithTtl, Peek, SyncPeek
from redline.cache.base import MISSING, Cache, CacheStats, TierStats
from redline.cache.invalidation import Invalidation
from redline.exceptions import CacheUnavailable

__all__ = ["TieredCache"]

logger = logging.getLogger(__name__)


class TieredCache:
    """L1 + L2 with cross-process L1 invalidation; see the module docstring.

    Parameters: ``l1`` (usually a :class:`~redline.cache.memory.MemoryCache`), ``l2`` (usually
    a :class:`~redline.cache.redis.RedisCache`), ``invalidation`` (the channel; ``None`` for a
    single process), ``l1_ttl`` (cap on how long a value lives in L1), ``offline_l1_ttl``
    (the cap while the invalidation link is down, or after an L2 write failed; 0: keep
    nothing in L1 then), ``publish_timeout`` (the most one invalidation publish may take),
    ``name`` of this tier in :meth:`stats`.
    """

    def __init__(
        self,
        l1: Cache,
        l2: Cache,
        *,
        invalidation: Invalidation | None = None,
        l1_ttl: float | None = None,
        offline_l1_ttl: float = 1.0,
        publish_timeout: float = 1.0,
        name: str = "tiered",
    ) -> None:
        if l1_ttl is not None and l1_ttl <= 0:
            raise ValueError(f"l1_ttl must be > 0 or None, got {l1_ttl}")
        if offline_l1_ttl < 0:
            raise ValueError(f"offline_l1_ttl must be >= 0, got {offline_l1_ttl}")
        if l1 is l2:
            raise ValueError("l1 and l2 must be two different caches")
        self.l1 = l1
        self.l2 = l2
        self.invalidation = invalidation
        self.l1_ttl = l1_ttl
        self.offline_l1_ttl = offline_l1_ttl
        self.name = name
        # Optional abilities of the tiers, resolved once (isinstance on a protocol is slow).
        self._peek: Peek | None = l1.get_nowait if isinstance(l1, SyncPeek) else None
        self._l1_with_ttl: GetWithTtl | None = l1 if isinstance(l1, GetWithTtl) else None
        self._l2_with_ttl: GetWithTtl | None = l2 if isinstance(l2, GetWithTtl) else None
        self._guard = FillGuard()
        self._link = InvalidationLink(
            invalidation,
            l1,
            self._guard,
            l1_ttl=l1_ttl,
            offline_l1_ttl=offline_l1_ttl,
            publish_timeout=publish_timeout,
            name=name,
            logger=logger,
        )
        self.instance_id = self._link.instance_id
        self._l1_ttl_for = self._link.l1_ttl_for
        self._publish = self._link.publish
        self._l2_errors = 0

    def __repr__(self) -> str:
        link = "none" if self.invalidation is None else self._link.connected
        return (
            f"<TieredCache name={self.name!r} l1={self.l1!r} l2={self.l2!r} "
            f"invalidation_connected={link} pending_invalidations={self.pending_invalidations} "
            f"l2_errors={self._l2_errors}>"
        )

    async def start(self) -> None:
        """Start the invalidation subscriber (done on first use, and by ``async with``)."""
        if not self._link.started:
            await self._link.start()

    @property
    def pending_invalidations(self) -> int:
        """Invalidations recorded and not published yet (0 without a channel)."""
        return self._link.pending

    @property
    def l2_errors(self) -> int:
        """L2 failures absorbed so far (the ``errors`` of this tier in :meth:`stats`)."""
        return self._l2_errors

    async def wait_published(self, timeout: float) -> bool:
        """Wait (up to *timeout* seconds) until every invalidation is published; whether it was."""
        publisher = self._link.publisher
        return True if publisher is None else await publisher.wait_sent(timeout)

    # -- reads -------------------------------------------------------------------------

    def get_nowait(self, key: str, default: Any = MISSING) -> Any:
        """L1 only, synchronously (the decorator's hot path); ``default`` on an L1 miss."""
        if self._peek is None:
            return default
        return self._peek(key, default)

    @property
    def l1_peek(self) -> Peek | None:
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
        if self._l1_with_ttl is not None:
            value, remaining = await self._l1_with_ttl.get_with_ttl(key, MISSING)
            if value is not MISSING:
                return value, remaining
        return await self._read_l2(key, default)

    async def _read_l2(self, key: str, default: Any) -> tuple[Any, float | None]:
        await self.start()
        since = self._guard.now()
        try:
            if self._l2_with_ttl is not None:
                value, remaining = await self._l2_with_ttl.get_with_ttl(key, MISSING)
            else:
                value, remaining = await self.l2.get(key, MISSING), None
        except CacheUnavailable as exc:
            self._l2_failed("get", exc)
            return default, None
        if value is MISSING:
            return default, None
        ttl = self._l1_ttl_for(remaining if self._l2_with_ttl is not None else self.l1_ttl)
        if ttl is not None and ttl <= 0:
            return value, remaining
        if self._guard.may_fill(key, since):
            await self.l1.set(key, value, ttl)
        return value, remaining

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(keys)
        found = await self.l1.get_many(wanted)
        rest = [key for key in wanted if key not in found]
        if not rest:
            _trace_hooks.cache_read(len(found), 0)
            return found
        l1_hits = len(found)
        below: dict[str, Any] = {}
        with contextlib.suppress(CacheUnavailable):  # counted below: serve what L1 had
            below = await self.get_many_below_l1(rest)
        found.update(below)
        _trace_hooks.cache_read(l1_hits, len(below))
        return found

    async def get_many_below_l1(self, keys: Iterable[str]) -> dict[str, Any]:
        """The rest of :meth:`get_many` after L1 missed *keys*: L2, filling L1 under the
        fill rules (module docstring), so a read its caller stopped waiting for may finish
        in the background and still never store a value older than a completed write.
        Raises :class:`CacheUnavailable` (counted in ``errors``) rather than reading as a
        miss, so the caller can tell an outage from absent keys."""
        wanted = list(keys)
        if not wanted:
            return {}
        await self.start()
        since = self._guard.now()
        try:
            below = await self.l2.get_many(wanted)
        except CacheUnavailable as exc:
            self._l2_failed("get_many", exc)
            raise
        ttl = self._l1_ttl_for(self.l1_ttl)
        if below and self.l1_ttl is not None and ttl is not None and ttl > 0:
            fresh = {k: v for k, v in below.items() if self._guard.may_fill(k, since)}
            if fresh:
                await self.l1.set_many(fresh, ttl)
        return below

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
        stamp = self._guard.begin_write((key,))
        stored = True
        try:
            await self.l2.set(key, value, ttl, tags=tags)
        except CacheUnavailable as exc:
            stored = False
            self._l2_failed("set", exc)
        finally:
            safe = self._guard.end_write((key,), stamp)
        l1_ttl = self._l1_ttl_for(self._write_ttl(ttl), offline=not stored)
        if safe and (l1_ttl is None or l1_ttl > 0):
            await self.l1.set(key, value, l1_ttl, tags=tags)
        else:
            await self.l1.delete(key)
        self._publish(keys=(key,))

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        await self.start()
        keys = tuple(mapping)
        stamp = self._guard.begin_write(keys)
        stored = True
        try:
            await self.l2.set_many(mapping, ttl)
        except CacheUnavailable as exc:
            stored = False
            self._l2_failed("set_many", exc)
        finally:
            safe = self._guard.end_write(keys, stamp)
        l1_ttl = self._l1_ttl_for(self._write_ttl(ttl), offline=not stored)
        keep = l1_ttl is None or l1_ttl > 0
        if keep and safe:
            await self.l1.set_many({key: mapping[key] for key in safe}, l1_ttl)
        for key in keys:
            if not keep or key not in safe:
                await self.l1.delete(key)
        self._publish(keys=keys)

    async def incr(self, key: str, amount: int = 1) -> int:
        """Atomic in L2 (raises ``CacheUnavailable`` when L2 is down); drops L1 copies."""
        await self.start()
        stamp = self._guard.begin_write((key,))
        try:
            value = await self.l2.incr(key, amount)
        finally:
            self._guard.end_write((key,), stamp)
            await self.l1.delete(key)
            self._publish(keys=(key,))
        return value

    async def delete(self, key: str) -> bool:
        await self.start()
        stamp = self._guard.begin_write((key,))
        deleted = False
        try:
            deleted = await self.l2.delete(key)
        except CacheUnavailable as exc:
            self._l2_failed("delete", exc)
        finally:
            self._guard.end_write((key,), stamp)
        deleted = await self.l1.delete(key) or deleted
        self._publish(keys=(key,))
        return deleted

    async def delete_pattern(self, pattern: str) -> int:
        """Delete matching keys in both tiers; the count is L2's (L1's when L2 is down)."""
        await self.start()
        l2_count: int | None = None
        self._guard.begin_global()
        try:
            l2_count = await self.l2.delete_pattern(pattern)
        except CacheUnavailable as exc:
            self._l2_failed("delete_pattern", exc)
        finally:
            self._guard.end_global()
        l1_count = await self.l1.delete_pattern(pattern)
        self._publish(patterns=(pattern,))
        return l1_count if l2_count is None else l2_count

    async def invalidate_tags(self, *tags: str) -> int:
        """Delete tagged entries in L2 and clear L1 (see the module docstring); L2's count."""
        await self.start()
        count: int | None = None
        self._guard.begin_global()
        try:
            count = await self.l2.invalidate_tags(*tags)
        except CacheUnavailable as exc:
            self._l2_failed("invalidate_tags", exc)
        finally:
            self._guard.end_global()
        l1_count = await self.l1.invalidate_tags(*tags)
        await self.l1.clear()
        self._publish(tags=tags)
        return l1_count if count is None else count

    async def clear(self) -> None:
        await self.start()
        self._guard.begin_global()
        try:
            await self.l2.clear()
        except CacheUnavailable as exc:
            self._l2_failed("clear", exc)
        finally:
            self._guard.end_global()
        await self.l1.clear()
        self._publish(flush=True)

    def _write_ttl(self, ttl: float | None) -> float | None:
        return ttl if ttl is not None else getattr(self.l2, "default_ttl", None)

    def _l2_failed(self, what: str, exc: CacheUnavailable) -> None:
        self._l2_errors += 1
        logger.debug("%s: L2 %s failed, serving from L1: %s", self.name, what, exc)

    # -- lifecycle and introspection ---------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "down", "l1": ..., "l2": ..., "invalidation": ...}``
        (``publishing``: whether invalidations go out; ``None`` without a channel)."""
        await self.start()
        l1 = await self._tier_health(self.l1)
        l2 = await self._tier_health(self.l2)
        link = self._link.connected
        publisher = self._link.publisher
        publishing = None if publisher is None else publisher.healthy
        if l1.get("status") != "ok":
            status = "down"
        elif l2.get("status") != "ok" or link is False or publishing is False:
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "name": self.name,
            "l1": l1,
            "l2": l2,
            "invalidation": link,
            "publishing": publishing,
            "pending_invalidations": self.pending_invalidations,
        }

    @staticmethod
    async def _tier_health(tier: Cache) -> dict[str, Any]:
        try:
            return await tier.health()
        except Exception as exc:  # health must report, never raise
            return {"status": "down", "error": str(exc)}

    def events(self) -> dict[str, int]:
        """The invalidation link's and publisher's event counts (``"state:down"``, ...)."""
        return self._link.events()

    def stats(self) -> CacheStats:
        """L1's tiers, L2's tiers, then this one (``errors``: L2 failures absorbed here;
        ``evictions``: invalidation messages applied to L1; ``events``: the invalidation
        link's state changes and failures)."""
        own = TierStats(
            name=self.name,
            errors=self._l2_errors,
            evictions=self._link.applied,
            events=self.events(),
        )
        return CacheStats(tiers=(*self.l1.stats().tiers, *self.l2.stats().tiers, own))

    async def close(self) -> None:
        try:
            await self._link.close()
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
