"""The server's database when several servers open it at once (uvicorn workers, replicas)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, select

from redline.exceptions import ConfigError
from redline.serve.database import Database, models_table, usage_table
from redline.serve.testing import HashingModel

SERVERS = 4  # the race shows with two; four makes every run hit it without the fix


async def _open_together(url: str) -> list[Database]:
    results = await asyncio.gather(
        *(Database.open(url) for _ in range(SERVERS)), return_exceptions=True
    )
    databases = [r for r in results if isinstance(r, Database)]
    errors = [r for r in results if not isinstance(r, Database)]
    try:
        assert errors == []  # every server starts, none loses the race to create a table
    finally:
        for database in databases if errors else []:
            await database.close()
    return databases


async def _check_one_row_each(databases: list[Database]) -> None:
    model = HashingModel(8)
    try:
        await asyncio.gather(*(db.register_model(model) for db in databases))
        await asyncio.gather(*(db.register_model(model) for db in databases))  # and again
        async with databases[0].engine.connect() as conn:
            rows = (await conn.execute(select(models_table))).all()
        assert [(row.id, row.dimension) for row in rows] == [(model.name, 8)]
        assert [await db.count_usage() for db in databases] == [0] * SERVERS
    finally:
        for database in databases:
            await database.close()


async def test_servers_opening_a_new_sqlite_file_together_all_start(tmp_path: Path) -> None:
    for round_ in range(5):
        url = f"sqlite+aiosqlite:///{tmp_path / f'race{round_}.db'}"
        await _check_one_row_each(await _open_together(url))


@pytest.mark.slow
async def test_servers_opening_a_new_postgres_database_together_all_start(
    fresh_postgres_db: str,
) -> None:
    await _check_one_row_each(await _open_together(fresh_postgres_db))


async def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(ConfigError, match="cannot open database"):
        await Database.open(f"sqlite+aiosqlite:///{path}")
    assert path.read_bytes() == b"this is not an SQLite file" * 100  # left as it was


_OLD_USAGE_TABLE = (
    "CREATE TABLE redline_usage (request_id VARCHAR(64) PRIMARY KEY, route VARCHAR(64) NOT NULL, "
    "model VARCHAR(200) NOT NULL, inputs INTEGER NOT NULL, tokens INTEGER NOT NULL, "
    "cached_inputs INTEGER NOT NULL, client VARCHAR(200) NOT NULL, created_at FLOAT NOT NULL)"
)
_OLD_ROW = "INSERT INTO redline_usage VALUES ('old-1', '/v1/embeddings', 'm', 1, 2, 0, 'c', 1.0)"


async def _check_the_old_usage_table_gains_the_new_column(url: str) -> None:
    databases = await _open_together(url)  # several servers migrate at once: none fails
    database = databases[0]
    try:
        row = {"route": "/v1/embeddings", "model": "m", "inputs": 1, "tokens": 1}
        row |= {"cached_inputs": 0, "client": "c", "created_at": 2.0}
        await database.insert_usage(
            [
                {**row, "request_id": "new-1", "client_request_id": "mine"},
                {**row, "request_id": "new-2"},
            ]
        )
        async with database.engine.connect() as conn:
            rows = (
                await conn.execute(select(usage_table).order_by(usage_table.c.request_id))
            ).all()
        assert [(r.request_id, r.client_request_id) for r in rows] == [
            ("new-1", "mine"),
            ("new-2", None),
            ("old-1", None),  # the old row is kept
        ]
    finally:
        for each in databases:
            await each.close()


async def test_a_usage_table_of_an_older_redline_gains_the_client_id_column_in_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_USAGE_TABLE)
        conn.execute(_OLD_ROW)
    await _check_the_old_usage_table_gains_the_new_column(f"sqlite+aiosqlite:///{path}")


@pytest.mark.slow
async def test_a_usage_table_of_an_older_redline_gains_the_client_id_column_in_postgres(
    fresh_postgres_db: str,
) -> None:
    conn = await asyncpg.connect(
        fresh_postgres_db.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await conn.execute(_OLD_USAGE_TABLE)
        await conn.execute(_OLD_ROW)
    finally:
        await conn.close()
    await _check_the_old_usage_table_gains_the_new_column(fresh_postgres_db)


async def test_an_old_table_lacking_a_required_column_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "older.db"
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_USAGE_TABLE.replace(", client VARCHAR(200) NOT NULL", ""))
    with pytest.raises(ConfigError, match="lacks the column 'client'"):
        await Database.open(f"sqlite+aiosqlite:///{path}")


async def _check_usage_rows_round_trip(url: str) -> None:
    database = await Database.open(url)
    full = {
        "request_id": "r-1",
        "client_request_id": "c-1",
        "route": "/v1/embeddings",
        "model": "all-MiniLM-L6-v2",
        "inputs": 3,
        "tokens": 17,
        "cached_inputs": 2,
        "cached_tokens": 11,
        "client": "ip:10.0.0.7",
        "created_at": 1234.5,
    }
    optional = ("client_request_id", "cached_tokens")
    bare = {key: value for key, value in full.items() if key not in optional}
    try:
        await database.insert_usage([full, {**bare, "request_id": "r-2"}])
        await database.insert_usage([{**full, "tokens": 99}])  # the same request again: skipped
        async with database.engine.connect() as conn:
            rows = (
                await conn.execute(select(usage_table).order_by(usage_table.c.request_id))
            ).all()
    finally:
        await database.close()
    assert [dict(row._mapping) for row in rows] == [
        full,
        {**bare, "request_id": "r-2", "client_request_id": None, "cached_tokens": None},
    ]


async def test_usage_rows_round_trip_every_column_in_sqlite(tmp_path: Path) -> None:
    await _check_usage_rows_round_trip(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")


async def test_usage_rows_round_trip_every_column_in_postgres(fresh_postgres_db: str) -> None:
    await _check_usage_rows_round_trip(fresh_postgres_db)


async def test_a_large_usage_batch_reaches_sqlite_in_a_few_multi_row_statements(
    tmp_path: Path,
) -> None:
    """A thousand rows are not stepped one by one (each row's step in ``executemany`` gives
    the GIL to the event loop and takes it back); every row, and only one per request id,
    lands across the statements' boundaries."""
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    calls: list[tuple[bool, int]] = []

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REDLINE_USAGE"):
            calls.append((many, statement.count("(?")))

    def row(index: int, tokens: int = 1) -> dict[str, Any]:
        return {"request_id": f"r-{index}", "route": "/v1/embeddings", "model": "m",
                "inputs": 1, "tokens": tokens, "cached_inputs": 0, "client": "c",
                "created_at": float(index)}  # fmt: skip

    try:
        await database.insert_usage([row(0, tokens=7)])
        event.listen(database.engine.sync_engine, "before_cursor_execute", note)
        batch = [row(index) for index in range(1, 1_000)] + [row(500, tokens=9), row(0)]
        await database.insert_usage(batch)
        async with database.engine.connect() as conn:
            stored = dict(
                (await conn.execute(select(usage_table.c.request_id, usage_table.c.tokens))).all()
            )
    finally:
        await database.close()
    assert stored == {f"r-{index}": 7 if index == 0 else 1 for index in range(1_000)}
    assert not any(many for many, _ in calls)  # no row-by-row executemany
    assert sum(rows for _, rows in calls) == len(batch)
    assert len(calls) <= 10  # 512 + 256 + 128 + 64 + 32 + 8 + 1
