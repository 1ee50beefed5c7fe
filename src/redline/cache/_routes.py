"""Private: where a Redis command goes — the breaker and the in-flight limit of its node.

Standalone Redis has one :class:`Route`. A Redis Cluster has one per master (``"host:port"``),
found from redis-py's own slot table, so a dead master opens only its own breaker and its
slow or frozen calls hold only its own in-flight slots. While a master fails, the slot table
is refreshed in the background (at most every ``refresh_interval`` seconds): once a replica
has taken over, its keys route to the new master, which has a breaker of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from redline._events import EventLog
from redline.cache._redis_errors import TRANSLATED_ERRORS
from redline.cache.breaker import CircuitBreaker, NodeBreakers

__all__ = ["Route", "Routes"]


class Route:
    """One node's breaker and in-flight limit."""

    __slots__ = ("breaker", "limit", "node")

    def __init__(self, node: str, breaker: CircuitBreaker, limit: asyncio.Semaphore | None) -> None:
        self.node = node
        self.breaker = breaker
        self.limit = limit

    def __repr__(self) -> str:
        return f"Route({self.node!r}, {self.breaker.state.value})"


class Routes:
    """The routes of one client: a single one (standalone) or one per Cluster master."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        template: CircuitBreaker,
        *,
        max_in_flight: int | None,
        name: str,
        logger: logging.Logger,
        refresh_interval: float = 0.5,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self.refresh_interval = refresh_interval
        self.events = EventLog(logger, f"cache {name} topology")
        self._timer = timer
        self._cluster = client if isinstance(client, RedisCluster) else None
        if template.events is None:
            template.events = EventLog(logger, f"cache {template.name}")
        self.single: Route | None = None
        self.breakers = NodeBreakers(template, logger)
        self._routes: dict[str, Route] = {}
        if self._cluster is None:
            self.single = Route(name, template, self._new_limit())
        # redis-py's async RedisCluster misroutes concurrent first commands on a cold client;
        # the first command initialises it (under redis-py's own lock) first.
        self.ready = self._cluster is None
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = -float("inf")

    def _new_limit(self) -> asyncio.Semaphore | None:
        return asyncio.Semaphore(self.max_in_flight) if self.max_in_flight else None

    async def initialize(self) -> None:
        """Learn the Cluster's slot table (once; later refreshes go through :meth:`suspect`)."""
        if not self.ready and self._cluster is not None:
            await self._cluster.initialize()
            self.ready = True

    def node(self, name: str) -> Route:
        """The route of the Cluster node *name* (``"host:port"``)."""
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = Route(name, self.breakers.get(name), self._new_limit())
        return route

    def for_key(self, full_key: str) -> Route:
        """The route of the node that owns *full_key* now (raises redis-py's
        ``SlotNotCoveredError`` when the slot table has no owner for it)."""
        cluster = self._cluster
        if cluster is None:
            return cast(Route, self.single)
        node = cluster.get_node_from_key(full_key)
        if node is None:  # pragma: no cover - redis-py raises instead for a primary
            raise LookupError(full_key)
        return self.node(node.name)

    def breaker_for(self, full_key: str) -> CircuitBreaker:
        """The breaker of the node that owns *full_key*: the one breaker of standalone Redis;
        on a Cluster not yet used, or a key no node owns now, the template."""
        if self.single is not None:
            return self.single.breaker
        if not self.ready:
            return self.breakers.template
        try:
            return self.for_key(full_key).breaker
        except TRANSLATED_ERRORS:
            return self.breakers.template

    def group(self, full_keys: Iterable[str]) -> dict[Route, list[int]]:
        """The positions of *full_keys*, grouped by the route of their owner."""
        groups: dict[Route, list[int]] = {}
        for index, key in enumerate(full_keys):
            groups.setdefault(self.for_key(key), []).append(index)
        return groups

    def primaries(self) -> list[tuple[ClusterNode, Route]]:
        """Every Cluster master with its route (empty for standalone Redis)."""
        if self._cluster is None:
            return []
        return [(node, self.node(node.name)) for node in self._cluster.get_primaries()]

    def all(self) -> list[Route]:
        """Every route known so far."""
        return [self.single] if self.single is not None else list(self._routes.values())

    def suspect(self) -> None:
        """A node failed or its breaker is open: refresh the slot table in the background
        (Cluster only; one at a time, at most every ``refresh_interval`` seconds)."""
        if self._cluster is None or self._refresh is not None:
            return
        now = self._timer()
        if now - self._refreshed_at < self.refresh_interval:
            return
        self._refreshed_at = now
        loop = asyncio.get_running_loop()
        self._refresh = loop.create_task(self._refresh_slots(self._cluster))

    async def _refresh_slots(self, cluster: RedisCluster) -> None:
        try:
            await cluster.nodes_manager.initialize()
        except Exception as exc:  # every node unreachable: the next failure tries again
            self.events.failure("slot table refresh", exc)
        else:
            current = {node.name for node in cluster.get_nodes()}
            for name in [name for name in self._routes if name not in current]:
                del self._routes[name]
            self.breakers.retain(current)
        finally:
            self._refresh = None

    def event_counts(self) -> dict[str, int]:
        """The health events of every route and of the slot-table refreshes, summed."""
        counts = self.breakers.event_counts()
        if self.single is not None and self.single.breaker.events is not None:
            counts = self.single.breaker.events.counts()
        for event, count in self.events.counts().items():
            counts[f"topology:{event}"] = count
        return counts

    async def aclose(self) -> None:
        """Stop a refresh in flight."""
        task, self._refresh = self._refresh, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
