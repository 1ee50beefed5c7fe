"""The built-in model's batching: length-sorted passes shared among parallel workers."""

from __future__ import annotations

import random

import numpy as np
import pytest

from redline.serve.minilm import MiniLMModel, length_shares

pytestmark = pytest.mark.model

WORDS = ["cache", "model", "server", "batch", "latency", "vector", "queue", "redis", "nginx"]


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(count)]


@pytest.mark.parametrize(("count", "workers", "sub_batch"), [(64, 2, 16), (33, 3, 8), (5, 2, 16)])
def test_shares_cover_every_input_once(count: int, workers: int, sub_batch: int) -> None:
    texts = _texts(count)
    shares = length_shares(texts, workers, sub_batch)
    assert 1 <= len(shares) <= workers
    assert sorted(i for share in shares for i in share) == list(range(count))


def test_one_worker_keeps_one_share_in_order() -> None:
    assert length_shares(_texts(10), 1, 4) == [list(range(10))]
    assert length_shares(["only"], 4, 16) == [[0]]


def test_a_small_batch_is_still_split_among_workers() -> None:
    shares = length_shares(_texts(8), 2, 16)
    assert [len(share) for share in shares] == [4, 4]


def test_shares_carry_about_equal_padded_work() -> None:
    texts = _texts(64, seed=3)
    shares = length_shares(texts, 2, 16)

    def work(share: list[int]) -> int:
        ordered = sorted(share, key=lambda i: len(texts[i]))
        runs = [ordered[start : start + 16] for start in range(0, len(ordered), 16)]
        return sum(len(run) * len(texts[run[-1]]) for run in runs)

    loads = [work(share) for share in shares]
    assert max(loads) <= 1.5 * min(loads)


def test_parallel_workers_equal_the_raw_model_row_by_row(minilm: MiniLMModel) -> None:
    texts = _texts(40, seed=7)
    model = MiniLMModel(minilm.encoder, "test", sub_batch=8, workers=3)
    served = model.batch(texts)
    raw = minilm.encoder.encode(texts, normalize_embeddings=True)
    assert served.shape == (40, 384)
    cosines = np.sum(served * raw, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(raw, axis=1)
    )
    assert np.all(cosines >= 0.9999)


def test_bad_worker_counts_are_refused(minilm: MiniLMModel) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        MiniLMModel(minilm.encoder, "test", workers=0)
    with pytest.raises(ValueError, match="sub_batch must be >= 1"):
        MiniLMModel(minilm.encoder, "test", sub_batch=0)
