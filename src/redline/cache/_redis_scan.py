"""Private: delete the keys a glob matches, with SCAN on every master (never KEYS)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio.cluster import RedisCluster

from redline.cache._redis_commands import RedisCommands
from redline.cache._routes import Route

__all__ = ["escape_glob", "scan_unlink"]


def escape_glob(text: str) -> str:
    """*text* with the Redis glob's special characters escaped, to match literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


async def scan_unlink(commands: RedisCommands, match: str, what: str) -> int:
    """SCAN MATCH *match* on every master (the one server of standalone Redis) and UNLINK
    what each batch finds; the count removed."""
    client = commands.client
    removed = 0
    if isinstance(client, RedisCluster):
        if not commands.routes.ready:
            await commands.route(match)
        for _, route in commands.routes.primaries():
            cursor = 0
            while True:
                cursor, found = await commands.on_node(
                    route, what, "SCAN", cursor, "MATCH", match, "COUNT", 500, bulk=True
                )
                removed += await commands.unlink(what, found)
                if cursor == 0:
                    break
    else:
        single = cast(Route, commands.routes.single)
        cursor = 0
        while True:

            async def scan(cursor: int = cursor) -> Any:
                return await client.scan(cursor, match=match, count=500)

            cursor, found = await commands.run(single, what, scan, bulk=True)
            removed += await commands.unlink(what, found)
            if cursor == 0:
                break
    return removed
