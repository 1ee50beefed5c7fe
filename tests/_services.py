"""The real services the tests start (Redis, Redis Cluster, PostgreSQL, nginx's binary) live in
``redline._services``, shared with the benchmarks; this module keeps the tests' import path."""

from redline._services import (
    HOST,
    PostgresServer,
    RedisClusterServers,
    RedisServer,
    free_port,
    require_binary,
    stop_process,
    wait_for_port,
)

__all__ = [
    "HOST",
    "PostgresServer",
    "RedisClusterServers",
    "RedisServer",
    "free_port",
    "require_binary",
    "stop_process",
    "wait_for_port",
]
