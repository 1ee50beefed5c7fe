"""Real services on free loopback ports, for redline's own tests and benchmarks: not API.

Redis, a 6-node Redis Cluster, PostgreSQL, a fault-injecting TCP proxy, and ``redline
serve`` processes, each started in a private temporary directory by whoever needs it and
stopped by it (what an interrupted run leaves is stopped at interpreter exit)::

    from redline._services import RedisClusterServers

    cluster = RedisClusterServers().start()
    try:
        ...  # cluster.url, cluster.nodes[0].kill(), cluster.wait_for_replicas()
    finally:
        cluster.stop()

The servers need their binaries (``redis-server``, ``redis-cli``, PostgreSQL, nginx), which
``make test`` installs. Nothing starts on import. ``redline._services.serve`` (``Serve``) needs
httpx and is imported from that module.
"""

from redline._services.faultproxy import FaultProxy
from redline._services.postgres import PostgresServer
from redline._services.processes import (
    HOST,
    free_port,
    require_binary,
    stop_process,
    wait_for_port,
)
from redline._services.redis_servers import RedisClusterServers, RedisServer

__all__ = [
    "HOST",
    "FaultProxy",
    "PostgresServer",
    "RedisClusterServers",
    "RedisServer",
    "free_port",
    "require_binary",
    "stop_process",
    "wait_for_port",
]
