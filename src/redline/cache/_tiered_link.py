"""Private: a TieredCache's side of the invalidation channel — what it tells the other
processes, what it hears from them, and how long L1 may keep a value while it cannot hear.

Another process's L1 drops a key when this instance's message reaches it: normally within
one round trip of the write. If the channel cannot take the message (Redis frozen or gone),
the message is kept, merged with later ones, and sent when a probe gets through (the
:class:`~redline.cache._publisher.InvalidationPublisher`); meanwhile the other processes' own
links to that Redis go silent too, and their heartbeats count them as lost within
``2 * ping_interval`` (2 s by default) and flush their L1. When the link is lost, L1 is
flushed at once and again when it is back (messages sent meanwhile were lost); while it is
down, L1 entries live at most ``offline_l1_ttl`` seconds (1 s by default; 0: no L1 while
offline), which bounds what a reader can see without a channel while keeping the hot keys
local. A message received counts as a change in the cache's
:class:`~redline.cache._coherence.FillGuard`, so it refuses the fills of reads in flight.
"""

from __future__ import annotations

import logging
import math
import uuid

from redline._events import EventLog
from redline.cache._coherence import FillGuard
from redline.cache._publisher import InvalidationPublisher
from redline.cache.base import Cache
from redline.cache.invalidation import EventSource, Invalidation, InvalidationMessage

__all__ = ["InvalidationLink"]


class InvalidationLink:
    """One TieredCache's channel: publishes its changes, applies the others' to its L1."""

    def __init__(
        self,
        invalidation: Invalidation | None,
        l1: Cache,
        guard: FillGuard,
        *,
        l1_ttl: float | None,
        offline_l1_ttl: float,
        publish_timeout: float,
        name: str,
        logger: logging.Logger,
    ) -> None:
        self.invalidation = invalidation
        self.instance_id = uuid.uuid4().hex
        self._l1 = l1
        self._guard = guard
        self._cap = l1_ttl if l1_ttl is not None else math.inf
        self._offline_cap = min(self._cap, offline_l1_ttl)
        self.started = invalidation is None
        self.applied = 0  # messages from other instances applied to L1
        self.publisher: InvalidationPublisher | None = None
        if invalidation is None:
            return
        events = EventLog(logger, f"{name}: invalidation publisher")
        self.publisher = InvalidationPublisher(
            invalidation, self.instance_id, timeout=publish_timeout, events=events
        )
        invalidation.subscribe(self._on_message)

    async def start(self) -> None:
        """Start the subscriber (once)."""
        if not self.started and self.invalidation is not None:
            self.started = True
            await self.invalidation.start()

    @property
    def connected(self) -> bool | None:
        """Whether the subscriber hears the channel (``None`` without one)."""
        return None if self.invalidation is None else self.invalidation.connected

    @property
    def pending(self) -> int:
        """Changes recorded and not published yet."""
        return 0 if self.publisher is None else self.publisher.pending

    def l1_ttl_for(self, ttl: float | None, *, offline: bool = False) -> float | None:
        """The L1 lifetime of a value whose L2 lifetime is *ttl*: capped by ``l1_ttl``, and
        by ``offline_l1_ttl`` while the link is down or when L2 may not hold the value."""
        cap = self._cap
        if offline or (self.invalidation is not None and not self.invalidation.connected):
            cap = self._offline_cap
        if ttl is None or ttl > cap:
            return None if cap == math.inf else cap
        return ttl

    def publish(
        self,
        *,
        keys: tuple[str, ...] = (),
        patterns: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
        flush: bool = False,
    ) -> None:
        """Tell the other instances to drop these from their L1 (in the background)."""
        if self.publisher is not None:
            self.publisher.put(keys=keys, patterns=patterns, tags=tags, flush=flush)

    async def _on_message(self, message: InvalidationMessage) -> None:
        if message.origin == self.instance_id:
            return
        self.applied += 1
        if message.flush or message.tags or message.patterns:
            self._guard.changed_all()
        else:
            self._guard.changed(message.keys)
        if message.flush or message.tags:
            await self._l1.clear()
            return
        for key in message.keys:
            await self._l1.delete(key)
        for pattern in message.patterns:
            await self._l1.delete_pattern(pattern)

    def events(self) -> dict[str, int]:
        """The channel's and the publisher's event counts (``"state:down"``, ...)."""
        counts: dict[str, int] = {}
        if isinstance(self.invalidation, EventSource):
            counts.update(self.invalidation.events.counts())
        if self.publisher is not None:
            for event, count in self.publisher.events.counts().items():
                counts[f"publish:{event}" if event.startswith("state:") else event] = count
        return counts

    async def close(self) -> None:
        """Send what is pending (within the publish timeout), then close the channel."""
        if self.publisher is not None:
            await self.publisher.close()
        if self.invalidation is not None:
            await self.invalidation.close()
