"""The server's database: a ``models`` registry table and a ``usage`` table, through SQLAlchemy
async 2.x (SQLite via aiosqlite by default, PostgreSQL via asyncpg when configured).

Example::

    db = await Database.open("sqlite+aiosqlite:///.redline/redline.db")
    await db.register_model(model)
    info = await db.get_model("all-MiniLM-L6-v2")   # dict or None
    await db.close()
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from redline.exceptions import ConfigError
from redline.serve.model import Model

__all__ = ["Database", "models_table", "usage_table"]

_metadata = MetaData()

models_table = Table(
    "redline_models",
    _metadata,
    Column("id", String(200), primary_key=True),
    Column("version", String(100), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("max_input_tokens", Integer, nullable=True),
    Column("owned_by", String(100), nullable=False),
    Column("created", Integer, nullable=False),
)

# ``request_id`` is the server's own id of the request (unique: it keys the row, so a replayed
# write-behind batch inserts nothing twice); ``client_request_id`` is the ``X-Request-ID`` the
# client sent, if any, which any number of requests may share.
usage_table = Table(
    "redline_usage",
    _metadata,
    Column("request_id", String(64), primary_key=True),
    Column("client_request_id", String(64), nullable=True),
    Column("route", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("inputs", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("cached_inputs", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=True),  # of ``tokens``, served from the cache
    Column("client", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)


# The dialects whose INSERT takes ON CONFLICT; any other runs plain statements.
_UPSERT_DIALECTS = frozenset({"postgresql", "sqlite"})


def _upsert(dialect: str) -> Any:
    """The ``insert`` taking ON CONFLICT of *dialect* (imported then: a server on SQLite
    never loads the PostgreSQL dialect), or None."""
    if dialect not in _UPSERT_DIALECTS:
        return None
    return importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert


# Creating the tables is check-then-create: a server started beside another one on the same
# database (uvicorn workers, replicas) can find a table missing and then fail to create it
# because the other just did. Another pass sees it and goes on.
_CREATE_ATTEMPTS = 4


async def _create_tables(engine: AsyncEngine) -> None:
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_metadata.create_all)
            async with engine.begin() as conn:
                await conn.run_sync(_add_missing_columns)
            return
        except SQLAlchemyError:
            if attempt == _CREATE_ATTEMPTS:
                raise
            await asyncio.sleep(0.05 * attempt)


def _add_missing_columns(conn: Connection) -> None:
    """Bring a table made by an older redline up to date: add (nullable) columns it lacks.

    Only additive changes are made here; a column that changed meaning would need a real
    migration. A server racing another one to add the same column fails and retries.
    """
    inspector = inspect(conn)
    for table in _metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise ConfigError(
                    f"table {table.name!r} lacks the column {column.name!r} and it cannot be "
                    "added in place; migrate the table or point REDLINE_DATABASE_URL elsewhere"
                )
            kind = column.type.compile(dialect=conn.dialect)
            preparer = conn.dialect.identifier_preparer
            conn.execute(
                text(
                    f"ALTER TABLE {preparer.format_table(table)} "
                    f"ADD COLUMN {preparer.format_column(column)} {kind}"
                )
            )


_USAGE_COLUMNS = tuple(column.key for column in usage_table.columns)

#: The most rows one multi-row INSERT carries (a power of two: see :class:`_RowsStatement`).
_MAX_ROWS_PER_STATEMENT = 512


class _RowsStatement:
    """An INSERT of one row with ``?`` parameters, made to carry many rows per statement.

    Python's ``sqlite3`` releases the GIL and takes it back around every row it steps, so an
    ``executemany`` of a thousand rows, in aiosqlite's thread, fights the event loop for the
    GIL a thousand times: on a server answering cache hits that cost the loop ~45 us per
    usage row beside the ~20 us of the insert itself (``benchmarks/hit_bench.py``). One
    statement of many ``VALUES`` groups is stepped once.

    A batch is cut into statements of power-of-two row counts (512, then the remainder's
    bits), so that only a few statement texts exist and SQLite's statement cache keeps them
    compiled.
    """

    def __init__(self, head: str, group: str, tail: str, width: int) -> None:
        self._head, self._group, self._tail = head, group, tail
        # SQLite before 3.32 takes at most 999 parameters per statement, later ones 32766.
        limit = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
        rows = _MAX_ROWS_PER_STATEMENT
        while rows > 1 and rows * width > limit:
            rows //= 2
        self.max_rows = rows
        self._texts: dict[int, str] = {}

    @classmethod
    def of(cls, sql: str, width: int) -> _RowsStatement | None:
        """For *sql*, an INSERT of one row of *width* ``?`` parameters; None if it is not
        one (its rows then go through ``executemany``)."""
        group = "(" + ", ".join(["?"] * width) + ")"
        head, found, tail = sql.partition(" VALUES " + group)
        if not found or "?" in head or "?" in tail:
            return None
        return cls(head + " VALUES ", group, tail, width)

    def text(self, rows: int) -> str:
        """The statement for *rows* rows (a power of two up to ``max_rows``)."""
        found = self._texts.get(rows)
        if found is None:
            found = self._head + ",".join([self._group] * rows) + self._tail
            self._texts[rows] = found
        return found

    def chunks(self, count: int) -> list[tuple[int, int]]:
        """``(start, rows)`` of the statements that carry *count* rows."""
        out = []
        start = 0
        rows = self.max_rows
        while start < count:
            while rows > count - start:
                rows //= 2
            out.append((start, rows))
            start += rows
        return out


def _plain(mapping: Any) -> dict[str, Any]:
    """A row as a dict with plain ``str`` keys (SQLAlchemy's ``quoted_name`` trips orjson)."""
    return {str.__str__(key): value for key, value in mapping.items()}


class Database:
    """An async engine plus the two tables; create it with :meth:`open`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.url = engine.url.render_as_string(hide_password=True)
        self._usage_insert: tuple[str, tuple[str, ...] | None] | None = None
        self._usage_rows: _RowsStatement | None = None

    @classmethod
    async def open(cls, url: str, *, data_dir: Path | None = None) -> Database:
        """Connect, create the tables (or add the columns an older redline's tables lack);
        ``ConfigError`` when the URL is unusable or a table cannot be brought up to date."""
        if url.startswith("sqlite") and data_dir is not None:
            await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        try:
            engine = create_async_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"bad database URL {url!r}: {exc}") from exc
        try:
            await _create_tables(engine)
        except ConfigError:
            await engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise ConfigError(f"cannot open database {engine.url!r}: {exc}") from exc
        return cls(engine)

    async def register_model(self, model: Model, *, owned_by: str = "redline") -> None:
        """Insert or replace the served model's row."""
        row = {
            "id": model.name,
            "version": model.version,
            "dimension": model.dimension,
            "max_input_tokens": getattr(model, "max_input_tokens", None),
            "owned_by": owned_by,
            "created": int(time.time()),
        }
        upsert = _upsert(self.engine.dialect.name)
        async with self.engine.begin() as conn:
            if upsert is not None:
                # One statement: several workers or replicas register the model as they start.
                changes = {key: value for key, value in row.items() if key != "id"}
                statement = upsert(models_table).values(**row)
                await conn.execute(
                    statement.on_conflict_do_update(index_elements=["id"], set_=changes)
                )
            else:
                await conn.execute(delete(models_table).where(models_table.c.id == model.name))
                await conn.execute(insert(models_table).values(**row))

    async def get_model(self, model_id: str) -> dict[str, Any] | None:
        """The registry row of *model_id*, or None."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(models_table).where(models_table.c.id == model_id))
            row = result.first()
        return _plain(row._mapping) if row is not None else None

    async def list_models(self) -> list[dict[str, Any]]:
        """Every registry row, by id."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(models_table).order_by(models_table.c.id))
            return [_plain(row._mapping) for row in result.all()]

    async def insert_usage(self, records: Sequence[dict[str, Any]]) -> None:
        """Insert usage rows in one statement; a row whose (server) request id exists is skipped.

        Idempotent on purpose: write-behind delivers at least once, so a batch that was
        committed just before a crash or a cancellation may come again. Rows without a
        ``client_request_id`` or ``cached_tokens`` get ``None``.

        The statement is compiled once and its rows go to the driver as they are (plain
        ``str`` / ``int`` / ``float`` values need no conversion): SQLAlchemy's own handling of
        each row of a statement cost ~4 us of the event loop's time per row. On SQLite many
        rows go in each statement (:class:`_RowsStatement`).
        """
        if not records:
            return
        sql, order = self._usage_statement()
        if order is None:
            named = [{name: record.get(name) for name in _USAGE_COLUMNS} for record in records]
            async with self.engine.begin() as conn:
                await conn.exec_driver_sql(sql, named)
            return
        statement = self._usage_rows
        async with self.engine.begin() as conn:
            if statement is None:
                rows = [tuple([record.get(name) for name in order]) for record in records]
                await conn.exec_driver_sql(sql, rows)
                return
            for start, count in statement.chunks(len(records)):
                chunk = records[start : start + count]
                flat = tuple([record.get(name) for record in chunk for name in order])
                await conn.exec_driver_sql(statement.text(count), flat)

    def _usage_statement(self) -> tuple[str, tuple[str, ...] | None]:
        """The usage INSERT as this database's driver takes it: its SQL, and the names of its
        parameters in order when they are positional (None: they go by name)."""
        if self._usage_insert is None:
            statement: Any
            upsert = _upsert(self.engine.dialect.name)
            if upsert is not None:
                statement = upsert(usage_table).on_conflict_do_nothing()
            else:
                statement = insert(usage_table)
            compiled = statement.compile(dialect=self.engine.dialect)
            order = tuple(compiled.positiontup or ()) if compiled.positional else None
            self._usage_insert = (str(compiled), order)
            if order is not None and self.engine.dialect.name == "sqlite":
                self._usage_rows = _RowsStatement.of(str(compiled), len(order))
        return self._usage_insert

    async def count_usage(self) -> int:
        """How many usage rows exist."""
        async with self.engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(usage_table))).scalar_one()
            )

    async def ping(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def close(self) -> None:
        """Dispose of the connection pool."""
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database(url={self.url!r})"
