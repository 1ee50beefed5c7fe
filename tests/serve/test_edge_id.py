"""Behind the cluster's nginx a request retried on another replica is counted once: replicas
that trust the edge id key usage rows by nginx's ``$request_id``; others ignore the header."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from redline.serve.database import usage_table
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app


async def _rows_after(tmp_path: Path, trust: bool, edge_ids: list[str]) -> list[str]:
    settings = make_settings(tmp_path, trust_edge_id=trust)
    async with running_app(settings, HashingModel(8)) as (client, state):
        assert state.usage is not None
        assert state.database is not None
        for index, edge in enumerate(edge_ids):
            response = await client.post(
                "/v1/embeddings", json={"input": f"t{index}"}, headers={"X-Redline-Edge-Id": edge}
            )
            assert response.status_code == 200
        await state.usage.flush()
        async with state.database.engine.connect() as conn:
            return [row.request_id for row in (await conn.execute(select(usage_table))).all()]


async def test_a_retried_request_leaves_one_row_when_the_edge_id_is_trusted(
    tmp_path: Path,
) -> None:
    retried, other = uuid.uuid4().hex, uuid.uuid4().hex
    rows = await _rows_after(tmp_path, True, [retried, retried, other])
    assert sorted(rows) == sorted([f"edge-{retried}", f"edge-{other}"])


@pytest.mark.parametrize(
    ("trust", "edge"),
    [
        (False, uuid.uuid4().hex),  # a client cannot merge rows on a server that does not trust
        (True, "not-an-nginx-request-id"),  # nor with a value nginx would never send
    ],
)
async def test_an_untrusted_or_malformed_edge_id_cannot_merge_rows(
    tmp_path: Path, trust: bool, edge: str
) -> None:
    rows = await _rows_after(tmp_path, trust, [edge] * 5)
    assert len(set(rows)) == 5
    assert not any(row.startswith("edge-") for row in rows)
