"""Private: how a RedisCache command runs — routed to its node, through that node's breaker
and in-flight limit, one pipeline per node for many keys, redis-py errors translated.

Standalone Redis has one route; a Cluster one per master (:mod:`redline.cache._routes`).
A failure counts in :attr:`RedisCommands.errors` and, when the node did not answer, in its
breaker; a node that answered with a redirect or CLUSTERDOWN only has the slot table
refreshed.

On a Cluster, the commands for one node go straight to that node's connection pool as one
pipeline (``ClusterNode.execute_pipeline``), routed by our own slot lookup: redis-py's
``ClusterPipeline`` resolves a command policy, a slot and a node per command and awaits
its metrics hooks per node: about twice the client CPU of the same commands sent to the
node (``benchmarks/redis_cpu_bench.py``). Each command gets its own reply or error (a
rejected command fails alone, not its whole batch); a redirect (MOVED, ASK) is not
followed but counted as an answer, and the slot table is refreshed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.commands.core import CoreCommands

from redline.cache._redis_errors import (
    ANSWERED_ERRORS,
    TRANSLATED_ERRORS,
    UNAVAILABLE_ERRORS,
    translate_redis_error,
)
from redline.cache._routes import Route, Routes
from redline.cache.breaker import BreakerState, connection_setup
from redline.exceptions import CacheError, CacheUnavailable

__all__ = ["BULK", "RedisCommands", "raise_first_error"]

# Commands in one pipeline beyond which it may rightly take long (not a stall).
BULK = 256
T = TypeVar("T")


class _Batch(CoreCommands):
    """The commands queued on it through redis-py's command methods, not sent."""

    def __init__(self) -> None:
        self.commands: list[PipelineCommand] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(PipelineCommand(len(self.commands), *args, **options))
        return self


# A node that answers a redirect (MovedError is an AskError) is up: our slot table is stale.
_REDIRECTS = (redis_errors.AskError,)


def raise_first_error(results: Iterable[Any]) -> None:
    """Raise the first :class:`CacheError` among per-command *results*, if any."""
    for result in results:
        if isinstance(result, CacheError):
            raise result


class RedisCommands:
    """Runs commands for one RedisCache on *client* through *routes*; counts failures."""

    def __init__(self, client: Redis | RedisCluster, routes: Routes) -> None:
        self.client = client
        self.routes = routes
        self.is_cluster = isinstance(client, RedisCluster)
        self.errors = 0

    async def route(self, full_key: str) -> Route:
        """The route of the node that owns *full_key* (learning the Cluster's slots first)."""
        try:
            if not self.routes.ready:
                await self.routes.initialize()
            return self.routes.for_key(full_key)
        except TRANSLATED_ERRORS as exc:
            self.errors += 1
            raise translate_redis_error(exc, "routing") from exc

    def allow(self, route: Route) -> None:
        """Raise :class:`CacheUnavailable` at once while *route*'s breaker is open."""
        try:
            route.breaker.allow()
        except CacheUnavailable:
            self.routes.suspect()  # its node may have been replaced
            raise

    async def run(
        self,
        route: Route,
        what: str,
        op: Callable[[], Awaitable[T]],
        *,
        check: bool = True,
        bulk: bool = False,
    ) -> T:
        """``await op()`` through *route*'s breaker and in-flight limit, errors translated.

        A *bulk* call (a scan, a pipeline of many commands) may rightly take long: it still
        gives up when the breaker opens, but its wait is never taken for a stall.
        """
        breaker = route.breaker
        if check:
            self.allow(route)
        elif breaker.state is BreakerState.OPEN:  # opened since the call asked
            raise CacheUnavailable(f"circuit breaker {breaker.name!r} is open")
        guard = breaker.guard(awaits_answer=not bulk)
        try:
            async with guard:
                if not self.routes.ready:
                    # a topology refresh asks any node: its wait and replies are not this one's
                    with connection_setup(replies_count=False):
                        await self.routes.initialize()
                if route.limit is None:
                    result = await op()
                else:
                    async with route.limit:
                        result = await op()
        except CacheUnavailable:
            if not guard.aborted:
                raise
            self.errors += 1  # the breaker opened while this call waited
            raise
        except TRANSLATED_ERRORS as exc:
            self._fail(route, exc)
            raise translate_redis_error(exc, what) from exc
        breaker.record_success()
        return result

    async def on_node(self, route: Route, what: str, *args: Any, bulk: bool = False) -> Any:
        """One command sent to the Cluster node of *route* itself (a SCAN, a PING)."""
        return await self.run(
            route, what, lambda: self._node(route).execute_command(*args), bulk=bulk
        )

    def _node(self, route: Route) -> ClusterNode:
        """The Cluster node *route* stands for (its connection pool)."""
        node = cast(RedisCluster, self.client).get_node(node_name=route.node)
        if node is None:  # gone from the slot table since the keys were grouped
            raise redis_errors.ClusterError(f"node {route.node} left the cluster")
        return node

    def _fail(self, route: Route, exc: BaseException) -> None:
        self.errors += 1
        if isinstance(exc, ANSWERED_ERRORS + _REDIRECTS):
            # The node answered (CLUSTERDOWN while a failover runs, TRYAGAIN, a redirect):
            # it is up, the slot table may be stale.
            route.breaker.record_success()
            self.routes.suspect()
        elif isinstance(exc, UNAVAILABLE_ERRORS):
            route.breaker.record_failure(exc)
            self.routes.suspect()
        else:
            route.breaker.record_success()  # it answered

    async def keyed(self, what: str, full_key: str, command: Callable[[Any], Any]) -> Any:
        """One command on *full_key*'s node: ``command(client)`` on standalone Redis, one
        queued for that node alone on a Cluster (see the module docstring)."""
        route = self.routes.single or await self.route(full_key)
        if not self.is_cluster:
            return await self.run(route, what, lambda: command(self.client))

        (result,) = await self.fan_out(what, [full_key], lambda pipe, _: command(pipe))
        if isinstance(result, CacheError):
            raise result
        return result

    async def fan_out(
        self,
        what: str,
        full_keys: Sequence[str],
        queue: Callable[[Any, int], Any],
        *,
        check: bool = True,
    ) -> list[Any]:
        """Command *i* (``queue(pipe, i)``, routed by ``full_keys[i]``) in one pipeline per
        node, the nodes concurrently, each node's in the order queued; per command its
        reply, or the :class:`CacheError` its node failed with."""
        results: list[Any] = [None] * len(full_keys)
        if not full_keys:
            return results
        if self.routes.single is not None:
            groups = {self.routes.single: list(range(len(full_keys)))}
        else:
            await self.route(full_keys[0])
            try:
                groups = self.routes.group(full_keys)
            except TRANSLATED_ERRORS as exc:
                self.errors += 1
                raise translate_redis_error(exc, "routing") from exc

        async def run(route: Route, positions: list[int]) -> None:
            async def execute() -> list[Any]:
                if not self.is_cluster:
                    pipe = self.client.pipeline(transaction=False)
                    for index in positions:
                        queue(pipe, index)
                    replies: list[Any] = await pipe.execute()
                    return replies
                batch = _Batch()  # type: ignore[abstract]  # redis-py types an attribute only clients have
                for index in positions:
                    queue(batch, index)
                await self._node(route).execute_pipeline(batch.commands)
                return [command.result for command in batch.commands]

            try:
                bulk = len(positions) > BULK
                replies = await self.run(route, what, execute, check=check, bulk=bulk)
            except CacheError as exc:
                for index in positions:
                    results[index] = exc
            else:
                for index, reply in zip(positions, replies, strict=True):
                    if isinstance(reply, TRANSLATED_ERRORS):  # one command failed, alone
                        self._fail(route, reply)
                        error = translate_redis_error(reply, what)
                        error.__cause__ = reply
                        reply = error
                    results[index] = reply

        if len(groups) == 1:
            await run(*next(iter(groups.items())))
        else:
            await asyncio.gather(*(run(route, positions) for route, positions in groups.items()))
        return results

    async def unlink(self, what: str, keys: Sequence[Any]) -> int:
        """UNLINK *keys*; the count removed (raises the first node failure)."""
        removed, _, error = await self.unlink_keys(what, keys)
        if error is not None:
            raise error
        return removed

    async def unlink_keys(
        self, what: str, keys: Sequence[Any]
    ) -> tuple[int, list[Any], CacheError | None]:
        """UNLINK *keys* (one command on standalone Redis, one per key pipelined per node on
        a Cluster): the count removed, the keys whose node failed, and its error."""
        if not keys:
            return 0, [], None
        batch = list(keys)
        if not self.is_cluster:
            route = cast(Route, self.routes.single)
            try:
                removed: int = await self.run(
                    route, what, lambda: self.client.unlink(*batch), bulk=len(batch) > BULK
                )
            except CacheError as exc:
                return 0, batch, exc
            return removed, [], None
        results = await self.fan_out(
            what, batch, lambda pipe, i: pipe.execute_command("UNLINK", batch[i])
        )
        errors = [result for result in results if isinstance(result, CacheError)]
        failed = [
            key
            for key, result in zip(batch, results, strict=True)
            if isinstance(result, CacheError)
        ]
        removed = sum(result for result in results if not isinstance(result, CacheError))
        return removed, failed, errors[0] if errors else None
