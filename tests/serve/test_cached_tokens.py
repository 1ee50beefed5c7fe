"""Usage rows say how many of a request's tokens came from the cache (what it saved)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from redline.serve.database import usage_table
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app, usage_rows


async def test_usage_rows_split_computed_and_cached_tokens(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, state):
        first = await client.post("/v1/embeddings", json={"input": ["a b", "c"]})
        second = await client.post(
            "/v1/embeddings",
            json={"input": ["a b", "d e f", "a b"]},
            headers={"X-Request-ID": "second"},
        )
        assert first.status_code == second.status_code == 200
        rows = await usage_rows(
            state,
            select(usage_table.c.tokens, usage_table.c.cached_tokens).where(
                usage_table.c.client_request_id == "second"
            ),
        )
    assert rows == [(7, 4)]  # "a b" twice from the cache: 2 + 2
