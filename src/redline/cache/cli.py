"""`redline` commands of the cache area: ``redline cache-demo``."""

from __future__ import annotations

from typing import Annotated, Any

import typer


async def run_demo(url: str, keys: int) -> dict[str, Any]:
    """Write *keys* keys through the cache at *url*, read them twice, report health and stats."""
    import time

    from redline.cache.url import cache_from_url

    async with cache_from_url(url) as cache:
        started = time.perf_counter()
        await cache.set_many({f"demo:{i}": {"i": i} for i in range(keys)}, ttl=60)
        written = time.perf_counter()
        for _ in range(2):
            found = await cache.get_many(f"demo:{i}" for i in range(keys))
        read = time.perf_counter()
        health = await cache.health()
        stats = cache.stats()
        await cache.delete_pattern("demo:*")
    return {
        "url": url,
        "keys": keys,
        "found": len(found),
        "write_ms": round((written - started) * 1000, 2),
        "read_ms": round((read - written) * 1000, 2),
        "health": health["status"],
        "tiers": [(t.name, t.hits, t.misses, t.sets, t.errors) for t in stats.tiers],
    }


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""

    @app.command("cache-demo")
    def cache_demo(
        url: Annotated[
            str,
            typer.Option(help="cache URL: memory://, redis://host:port/db, redis+cluster://..."),
        ] = "memory://",
        keys: Annotated[int, typer.Option(min=1, help="how many keys to write and read")] = 1000,
    ) -> None:
        """Write and read keys through a cache URL and print what the cache saw."""
        import asyncio

        from rich.console import Console
        from rich.table import Table

        from redline.exceptions import RedlineError

        try:
            result = asyncio.run(run_demo(url, keys))
        except RedlineError as exc:
            Console(stderr=True).print(f"[red]cache-demo failed:[/] {exc}")
            raise typer.Exit(1) from exc
        table = Table(title=f"cache-demo {url}")
        table.add_column("tier")
        for column in ("hits", "misses", "sets", "errors"):
            table.add_column(column, justify="right")
        for name, *counts in result["tiers"]:
            table.add_row(name, *(str(count) for count in counts))
        console = Console()
        console.print(table)
        console.print(
            f"{result['found']}/{keys} found, write {result['write_ms']} ms, "
            f"2 reads {result['read_ms']} ms, health {result['health']}"
        )
