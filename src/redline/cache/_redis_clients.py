"""Private: the redis-py client a RedisCache builds for itself, from a URL or Cluster nodes.

Both go through :func:`redline.cache.redis_url.redis_client`, the one factory every Redis
user shares, so the cache gets the same timeouts and retry policy as everyone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redline.cache.redis_url import RedisTarget, parse_redis_url, redis_client
from redline.exceptions import ConfigError

__all__ = ["client_for_nodes", "client_for_url"]


def client_for_url(
    url: str,
    *,
    max_connections: int | None,
    socket_timeout: float | None,
    socket_connect_timeout: float | None,
) -> tuple[Redis | RedisCluster, int | None]:
    """The client for *url* (keyword values replace the URL's when given) and its
    connection limit; a URL with cache options is refused."""
    target = parse_redis_url(url)
    if target.options or target.tiered:
        extra = sorted(target.options) or ["tiered"]
        raise ConfigError(
            f"RedisCache.from_url takes only connection options, got {extra[0]!r}; "
            f"use cache_from_url for cache options"
        )
    given: dict[str, Any] = {
        "max_connections": max_connections,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    target = replace(target, **{k: v for k, v in given.items() if v is not None})
    return redis_client(target), target.max_connections


def client_for_nodes(
    nodes: Sequence[tuple[str, int]],
    *,
    max_connections: int,
    socket_timeout: float,
    socket_connect_timeout: float,
    ssl: bool,
    username: str | None,
    password: str | None,
) -> Redis | RedisCluster:
    """A retry-free ``RedisCluster`` reached through any of *nodes*."""
    if not nodes:
        raise ValueError("nodes must name at least one (host, port)")
    target = RedisTarget(
        tuple((host, port) for host, port in nodes),
        cluster=True,
        tls=ssl,
        username=username,
        password=password,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        max_connections=max_connections,
    )
    return redis_client(target)
