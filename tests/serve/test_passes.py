"""Planning a batch's forward passes: sorted by length, cut into shares of equal work."""

from __future__ import annotations

import itertools
import random

import pytest

from redline.serve.passes import length_shares, pass_size

WORDS = ["cache", "model", "server", "batch", "latency", "vector", "queue", "redis", "nginx"]


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(count)]


def _work(texts: list[str], share: list[int], sub_batch: int) -> int:
    """What the share costs when run: even passes, each padded to its longest text."""
    lengths = sorted(len(texts[i]) for i in share)
    size = pass_size(len(lengths), sub_batch)
    return sum(
        len(lengths[start : start + size]) * lengths[start : start + size][-1]
        for start in range(0, len(lengths), size)
    )


@pytest.mark.parametrize(
    ("count", "workers", "sub_batch"), [(64, 2, 16), (33, 3, 8), (5, 2, 16), (300, 4, 16)]
)
def test_shares_cover_every_input_once(count: int, workers: int, sub_batch: int) -> None:
    shares = length_shares(_texts(count), workers, sub_batch)
    assert 1 <= len(shares) <= workers
    assert all(shares)
    assert sorted(i for share in shares for i in share) == list(range(count))


def test_each_share_is_a_run_of_the_length_order() -> None:
    texts = _texts(50, seed=1)
    shares = length_shares(texts, 3, 8)
    bounds = [(min(len(texts[i]) for i in s), max(len(texts[i]) for i in s)) for s in shares]
    for (_, longest), (shortest, _) in itertools.pairwise(bounds):
        assert longest <= shortest


def test_one_worker_or_one_input_keeps_one_share_in_order() -> None:
    assert length_shares(_texts(10), 1, 4) == [list(range(10))]
    assert length_shares(["only"], 4, 16) == [[0]]
    assert length_shares([], 2, 16) == [[]]


def test_a_small_batch_is_still_split_among_workers() -> None:
    assert len(length_shares(_texts(8), 2, 16)) == 2


@pytest.mark.parametrize(("count", "seed"), [(32, 3), (64, 4), (20, 5)])
def test_shares_carry_about_equal_padded_work(count: int, seed: int) -> None:
    texts = _texts(count, seed=seed)
    loads = [_work(texts, share, 16) for share in length_shares(texts, 2, 16)]
    assert max(loads) <= 1.25 * min(loads)


def test_the_short_share_holds_more_texts() -> None:
    texts = [("x" * n) for n in range(10, 42)]  # 32 texts, lengths 10..41
    short, long = length_shares(texts, 2, 16)
    assert len(short) > len(long)


@pytest.mark.parametrize(
    ("count", "sub_batch", "expected"), [(32, 16, 16), (18, 16, 9), (5, 16, 5), (0, 16, 16)]
)
def test_pass_size_makes_even_passes(count: int, sub_batch: int, expected: int) -> None:
    assert pass_size(count, sub_batch) == expected
