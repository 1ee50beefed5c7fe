"""Private: a RedisCache's health — a PING per node through its breaker, never raising."""

from __future__ import annotations

from typing import Any, cast

from redline.cache._redis_commands import RedisCommands
from redline.cache._routes import Route
from redline.exceptions import CacheError

__all__ = ["ping_nodes"]


async def ping_nodes(commands: RedisCommands, probe_key: str) -> tuple[str, list[str], Any]:
    """PING every master (the server of standalone Redis): ``(status, errors, nodes)``,
    status ``ok`` / ``degraded`` (some masters down) / ``down``; ``nodes`` is each
    master's status and breaker on a Cluster, ``None`` on standalone Redis."""
    errors: list[str] = []
    client = commands.client
    if not commands.is_cluster:
        route = cast(Route, commands.routes.single)
        try:
            await commands.run(route, "PING", lambda: client.ping())
        except CacheError as exc:
            errors.append(str(exc))
        return ("down" if errors else "ok"), errors, None
    nodes: dict[str, Any] = {}
    try:
        await commands.route(probe_key)
        primaries = commands.routes.primaries()
    except CacheError as exc:
        errors.append(str(exc))
        primaries = []
    for _, route in primaries:
        try:
            await commands.on_node(route, "PING", "PING")
        except CacheError as exc:
            errors.append(f"{route.node}: {exc}")
            nodes[route.node] = {"status": "down", "breaker": route.breaker.state.value}
        else:
            nodes[route.node] = {"status": "ok", "breaker": route.breaker.state.value}
    healthy = sum(node["status"] == "ok" for node in nodes.values())
    status = "ok" if not errors else "degraded" if healthy else "down"
    return status, errors, nodes
