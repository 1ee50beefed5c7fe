"""UsageRecorder: records reach the database in batches, behind the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redline.serve.database import Database
from redline.serve.usage import UsageRecorder


class _Gauge:
    def __init__(self) -> None:
        self.value = -1.0

    def set(self, value: float) -> None:
        self.value = value


def _fields(index: int) -> dict[str, Any]:
    return {
        "request_id": f"req-{index}",
        "route": "/v1/embeddings",
        "model": "m",
        "inputs": 2,
        "tokens": 5,
        "cached_inputs": 1,
        "client": "ip:127.0.0.1",
    }


async def test_records_are_written_in_batches_and_counted(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    gauge = _Gauge()
    recorder = UsageRecorder(database, max_batch=2, max_interval=30, backlog_gauge=gauge)
    await recorder.start()
    try:
        for index in range(25):
            recorder.record(**_fields(index))
        assert recorder.stats().recorded == 25
        await recorder.flush()
        assert await database.count_usage() == 25
        assert recorder.stats().written == 25
        assert recorder.stats().backlog == 0
        assert gauge.value == 0
    finally:
        await recorder.close()
        await database.close()


async def test_a_failing_database_keeps_the_records_for_later(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")

    class Flaky:
        calls = 0

        async def insert_usage(self, records: list[dict[str, Any]]) -> None:
            self.calls += 1
            if self.calls <= 2:
                raise OSError("database restarting")
            await database.insert_usage(records)

    flaky = Flaky()
    recorder = UsageRecorder(flaky, max_batch=50, max_interval=30)
    await recorder.start()
    try:
        for index in range(3):
            recorder.record(**_fields(index))
        await recorder.flush()
        assert await database.count_usage() == 3
        assert flaky.calls == 3
    finally:
        await recorder.close()
        await database.close()


async def test_a_replayed_batch_is_not_inserted_twice(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'u.db'}")
    try:
        rows = [{**_fields(index), "created_at": 1.0} for index in range(3)]
        await database.insert_usage(rows)
        await database.insert_usage(rows)
        assert await database.count_usage() == 3
    finally:
        await database.close()
