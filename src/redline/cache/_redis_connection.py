"""Private: redis-py connections that tell the circuit breaker what a call is waiting for.

A guarded call (:meth:`~redline.cache.breaker.CircuitBreaker.guard`) that has to open a
connection first is not waiting for an answer while it connects and runs the handshake
(``HELLO``/``AUTH``/``CLIENT SETINFO``): that is the connect and socket timeouts' business,
and on a busy box a cold pool opening dozens of connections takes longer than a stall
timeout without the server being stuck. So these connections report the set-up, each
request written and each reply read (:func:`~redline.cache.breaker.connection_setup`,
:func:`~redline.cache.breaker.command_sent`, :func:`~redline.cache.breaker.answer_received`);
outside a guarded call they behave exactly as redis-py's own.

Before each write and each read they also ask whether the breaker has given their call up
while a cancellation meant to stop it was lost (:func:`~redline.cache.breaker.call_given_up`);
then the connection is closed (a reply it still owes must never reach the next command) and
the call is cancelled there, as the breaker meant it to be.

:func:`report_to_breakers` puts them into a client built here (no I/O yet).
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection

from redline.cache.breaker import (
    answer_received,
    call_given_up,
    command_sent,
    connection_setup,
)

__all__ = ["BreakerAwareConnection", "BreakerAwareSSLConnection", "report_to_breakers"]


class _ReportsToBreaker(AbstractConnection):
    """The three phases, reported around redis-py's own methods."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        with connection_setup():
            await super().connect_check_health(check_health, retry_socket_connect)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if call_given_up():
            await self._give_up()
        await super().send_packed_command(command, check_health)
        command_sent()

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if call_given_up():
            await self._give_up()
        response = await super().read_response(*args, **kwargs)
        answer_received()
        return response

    async def _give_up(self) -> NoReturn:
        """Close this connection and raise what the breaker's cancellation would have raised
        here (the call's guard turns it into CacheUnavailable, "opened while this call
        waited"). Only called once ``call_given_up()``: no coroutine per command otherwise."""
        await self.disconnect(nowait=True)
        raise asyncio.CancelledError


class BreakerAwareConnection(_ReportsToBreaker, Connection):
    """redis-py's TCP connection, reporting to the breaker of the call using it."""


class BreakerAwareSSLConnection(_ReportsToBreaker, SSLConnection):
    """redis-py's TLS connection, reporting to the breaker of the call using it."""


_AWARE: dict[type[Any], type[Any]] = {
    Connection: BreakerAwareConnection,
    SSLConnection: BreakerAwareSSLConnection,
}


def report_to_breakers(client: Redis | RedisCluster) -> Redis | RedisCluster:
    """*client*, its connections made breaker-aware (a Unix socket's are left alone).

    Only for a client built here and not used yet: a standalone client's pool makes its
    connections from ``connection_class``; a Cluster makes each node's (the startup nodes
    and every node it learns of later) from its nodes manager's ``connection_kwargs``.
    """
    if isinstance(client, RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
        plain = kwargs.get("connection_class", Connection)
        kwargs["connection_class"] = _AWARE.get(plain, plain)
        nodes = {**client.nodes_manager.startup_nodes, **client.nodes_manager.nodes_cache}
        for node in [*nodes.values(), *client.startup_nodes]:
            node.connection_class = _AWARE.get(node.connection_class, node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = _AWARE.get(pool.connection_class, pool.connection_class)
    return client
