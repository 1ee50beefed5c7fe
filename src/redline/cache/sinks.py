"""Sinks for write-behind: where batches of :class:`WriteRecord` end up.

A sink is any ``async (batch: list[WriteRecord]) -> object`` callable. :class:`PostgresSink`
upserts a batch into a PostgreSQL table in ONE statement (``INSERT ... SELECT FROM unnest``)
keyed by the record key, and only moves a row forward (``WHERE table.seq < EXCLUDED.seq``):
replaying a batch after a crash, or an older record arriving late, changes nothing. So
at-least-once delivery from the queue becomes effectively-once in the table.

Example::

    sink = PostgresSink("postgresql://app@127.0.0.1/app", "user_profiles")
    await sink.create_table()
    async with WriteBehind(cache, sink) as wb:
        await wb.write("user:42", {"name": "Ada"})
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson

from redline.cache._queues import WriteRecord
from redline.exceptions import CacheError, CacheUnavailable, SerializationError

__all__ = ["PostgresSink"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class PostgresSink:
    """Upsert write-behind batches into table *table* (``key text``, ``value jsonb``, ``seq``).

    *dsn* is a ``postgresql://`` URL; the asyncpg pool is created on first use (or pass
    *pool*, an ``asyncpg.Pool`` you own). Values are stored as JSON. A database that cannot
    be reached raises :class:`CacheUnavailable`, a failed statement :class:`CacheError`, a
    value JSON cannot hold :class:`SerializationError`.
    """

    def __init__(
        self,
        dsn: str | None = None,
        table: str = "redline_write_behind",
        *,
        pool: Any = None,
        min_size: int = 1,
        max_size: int = 4,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise ValueError("pass exactly one of dsn or pool")
        if not _IDENTIFIER.match(table):
            raise ValueError(
                f"table must be a plain SQL identifier (schema.name allowed), got {table!r}"
            )
        self.dsn = dsn
        self.table = table
        self.min_size = min_size
        self.max_size = max_size
        self._pool = pool
        self._owns_pool = pool is None
        quoted = ".".join(f'"{part}"' for part in table.split("."))
        self._quoted = quoted
        self._upsert = (
            f"INSERT INTO {quoted} (key, value, seq) "
            "SELECT k, v::jsonb, s FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(k, v, s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, seq = EXCLUDED.seq, "
            f"updated_at = now() WHERE {quoted}.seq < EXCLUDED.seq"
        )
        self.batches = 0
        self.rows = 0

    async def _get_pool(self) -> Any:
        if self._pool is None:
            import asyncpg

            try:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=self.min_size, max_size=self.max_size
                )
            except _database_errors() as exc:
                raise _translate(exc, f"cannot connect the PostgreSQL sink {self.table!r}") from exc
        return self._pool

    async def _execute(self, query: str, *args: Any) -> None:
        pool = await self._get_pool()
        try:
            await pool.execute(query, *args)
        except _database_errors() as exc:
            raise _translate(exc, f"PostgreSQL sink {self.table!r} failed") from exc

    async def create_table(self) -> None:
        """Create the table if it does not exist."""
        await self._execute(
            f"CREATE TABLE IF NOT EXISTS {self._quoted} ("
            "key text PRIMARY KEY, value jsonb NOT NULL, seq int8 NOT NULL, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )

    async def __call__(self, batch: list[WriteRecord]) -> None:
        """Upsert *batch* (keys must be distinct, as write-behind's coalesced batches are)."""
        if not batch:
            return
        keys = [r.key for r in batch]
        try:
            values = [orjson.dumps(r.value).decode() for r in batch]
        except TypeError as exc:
            raise SerializationError(f"a value for {self.table!r} is not JSON: {exc}") from exc
        seqs = [r.seq for r in batch]
        await self._execute(self._upsert, keys, values, seqs)
        self.batches += 1
        self.rows += len(batch)

    async def close(self) -> None:
        """Close the pool if this sink created it."""
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    def __repr__(self) -> str:
        return f"<PostgresSink {self.table!r} batches={self.batches} rows={self.rows}>"


def _database_errors() -> tuple[type[Exception], ...]:
    """What talking to PostgreSQL can raise: the network's errors and asyncpg's own."""
    import asyncpg

    return (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _translate(exc: Exception, what: str) -> CacheError:
    """One of :func:`_database_errors` as redline's: a statement the server refused is a
    :class:`CacheError`; anything else (network, server not up yet) :class:`CacheUnavailable`."""
    import asyncpg

    refused = isinstance(exc, asyncpg.PostgresError)
    if refused and not isinstance(exc, asyncpg.CannotConnectNowError):
        return CacheError(f"{what}: {type(exc).__name__}: {exc}")
    return CacheUnavailable(f"{what}: {type(exc).__name__}: {exc}")
