"""A request whose every input is in the in-process cache tier is answered from the JSON kept
beside the cache (``routes._hits``): the same bytes, headers, cache counts and usage rows as
the general path's."""

from __future__ import annotations

import json
from base64 import b64decode
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from redline.cache.base import CacheStats
from redline.serve.database import usage_table
from redline.serve.embedder import cache_key
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app, usage_rows


def _memory_counts(stats: CacheStats) -> tuple[int, int]:
    tier = stats.tiers[0]
    return tier.hits, tier.misses


@pytest.mark.parametrize(
    "body",
    [
        {"input": "a cat sat"},
        {"input": ["a cat sat", "a dog", "a cat sat"]},
        {"input": "a cat sat", "encoding_format": "base64"},
        {"input": ["x y", "z"], "dimensions": 5},
        {"input": ["x y", "z"], "dimensions": 5, "encoding_format": "base64"},
    ],
)
async def test_a_hit_answers_the_bytes_the_general_path_answered(
    tmp_path: Path, body: dict[str, Any]
) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(16)) as (client, state):
        computed = await client.post("/v1/embeddings", json=body)
        cached = await client.post("/v1/embeddings", json=body)
        again = await client.post("/v1/embeddings", json=body)  # from the kept JSON
        assert len(state.encoded_hits) > 0
        kept = [hit.answers for hit in state.encoded_hits._entries.values()]
    if isinstance(body["input"], str):  # a request for one input: its whole answer is kept
        fmt = body.get("encoding_format", "float")
        assert [answers.get(fmt) for answers in kept] == [computed.content]
    else:
        assert kept
        assert not any(kept)
    assert computed.status_code == cached.status_code == again.status_code == 200
    assert computed.headers["x-cache"] == "miss"
    assert cached.headers["x-cache"] == again.headers["x-cache"] == "hit"
    assert cached.content == again.content == computed.content
    assert cached.headers["content-type"] == "application/json"
    assert cached.headers["server-timing"].startswith("cache;dur=")
    assert "queue;dur=0.000, inference;dur=0.000, total;dur=" in cached.headers["server-timing"]
    assert "age" not in cached.headers


async def test_hits_and_misses_are_counted_once_when_a_request_is_partly_cached(
    tmp_path: Path,
) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, state):
        assert state.cache is not None
        await client.post("/v1/embeddings", json={"input": "one"})
        before = _memory_counts(state.cache.stats())
        partial = await client.post("/v1/embeddings", json={"input": ["one", "two", "one"]})
        after_partial = _memory_counts(state.cache.stats())
        hit = await client.post("/v1/embeddings", json={"input": ["two", "one", "two"]})
        after_hit = _memory_counts(state.cache.stats())
    assert partial.headers["x-cache"] == "partial"
    assert hit.headers["x-cache"] == "hit"
    # As the general path counts: once per distinct key of a request.
    assert (after_partial[0] - before[0], after_partial[1] - before[1]) == (1, 1)
    assert (after_hit[0] - after_partial[0], after_hit[1] - after_partial[1]) == (2, 0)


async def test_a_value_stored_anew_is_answered_not_the_json_kept_for_the_old_one(
    tmp_path: Path,
) -> None:
    model = HashingModel(4)
    async with running_app(make_settings(tmp_path), model) as (client, state):
        assert state.cache is not None
        await client.post("/v1/embeddings", json={"input": "text"})
        first = await client.post("/v1/embeddings", json={"input": "text"})
        replacement = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        await state.cache.set(cache_key(model, "text", None), replacement)
        second = await client.post("/v1/embeddings", json={"input": "text"})
        await state.cache.set(cache_key(model, "text", None), replacement * 0.5)
        third = await client.post(
            "/v1/embeddings", json={"input": "text", "encoding_format": "base64"}
        )
    assert first.json()["data"][0]["embedding"] != [1.0, 0.0, 0.0, 0.0]
    assert second.headers["x-cache"] == "hit"
    assert second.json()["data"][0]["embedding"] == [1.0, 0.0, 0.0, 0.0]
    raw = b64decode(third.json()["data"][0]["embedding"])
    assert np.frombuffer(raw, "<f4").tolist() == [0.5, 0.0, 0.0, 0.0]


async def test_usage_rows_of_hits_count_every_token_as_cached(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, state):
        body = {"input": ["a b c", "d e", "a b c"]}
        await client.post("/v1/embeddings", json=body, headers={"X-Request-ID": "first"})
        for turn in range(3):
            answer = await client.post(
                "/v1/embeddings", json=body, headers={"X-Request-ID": f"hit-{turn}"}
            )
            assert answer.headers["x-cache"] == "hit"
            assert json.loads(answer.content)["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
        rows = await usage_rows(
            state,
            select(
                usage_table.c.client_request_id,
                usage_table.c.inputs,
                usage_table.c.tokens,
                usage_table.c.cached_inputs,
                usage_table.c.cached_tokens,
            ).order_by(usage_table.c.client_request_id),
        )
    assert rows == [
        ("first", 3, 8, 0, 0),
        ("hit-0", 3, 8, 3, 8),
        ("hit-1", 3, 8, 3, 8),
        ("hit-2", 3, 8, 3, 8),
    ]


async def test_max_age_and_no_cache_take_the_general_path(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, cache_ttl=60), HashingModel(8)) as (client, _):
        await client.post("/v1/embeddings", json={"input": "t"})
        aged = await client.post(
            "/v1/embeddings", json={"input": "t"}, headers={"Cache-Control": "max-age=30"}
        )
        fresh = await client.post(
            "/v1/embeddings", json={"input": "t"}, headers={"Cache-Control": "no-cache"}
        )
    assert aged.headers["x-cache"] == "hit"
    assert "age" in aged.headers
    assert fresh.headers["x-cache"] == "refresh"
