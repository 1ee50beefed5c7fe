"""Plan the forward passes of one batch: sort the texts by length, then cut the sorted order
into one contiguous share per worker so that every worker has about the same padded work.

A forward pass pads its texts to the longest one, so it costs about ``size x longest``;
sorting first keeps each pass's texts of similar length. Cutting the sorted order (rather
than dealing passes out round-robin) lets the share of short texts hold more of them.

Example::

    shares = length_shares(texts, workers=2, sub_batch=16)   # [[3, 0, ...], [7, 1, ...]]
    size = pass_size(len(shares[0]), 16)                     # even passes of at most 16
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["length_shares", "pass_size"]


def pass_size(count: int, sub_batch: int) -> int:
    """The size of each pass when *count* texts run in as few even passes of <= *sub_batch*."""
    if count <= 0:
        return max(1, sub_batch)
    passes = -(-count // sub_batch)
    return -(-count // passes)


def length_shares(texts: Sequence[str], workers: int, sub_batch: int) -> list[list[int]]:
    """Indices of *texts*, split into at most *workers* shares of about equal padded work.

    Each share is a run of the texts sorted by length (shortest first). The split minimises
    the largest share's cost, a share costing what its passes of *sub_batch* would: the sum
    of each pass's size times its longest text (in characters, a stand-in for tokens).
    """
    count = len(texts)
    if workers <= 1 or count <= 1:
        return [list(range(count))]
    order = sorted(range(count), key=lambda i: len(texts[i]))
    lengths = [max(1, len(texts[i])) for i in order]
    low, high = lengths[-1], count * lengths[-1]  # one text; every text padded to the longest
    while low < high:  # the least cost limit at which the greedy cut needs <= workers shares
        limit = (low + high) // 2
        if len(_cut(lengths, limit, sub_batch)) <= workers:
            high = limit
        else:
            low = limit + 1
    return [order[start:end] for start, end in _cut(lengths, low, sub_batch)]


def _cut(lengths: Sequence[int], limit: int, sub_batch: int) -> list[tuple[int, int]]:
    """Greedy runs of ascending *lengths*, each costing at most *limit* (one text always fits)."""
    runs: list[tuple[int, int]] = []
    start = closed = in_pass = 0
    for index, length in enumerate(lengths):
        if in_pass == sub_batch:  # the open pass is full: its cost is settled
            closed += sub_batch * lengths[index - 1]
            in_pass = 0
        if index > start and closed + (in_pass + 1) * length > limit:
            runs.append((start, index))
            start, closed, in_pass = index, 0, 0
        in_pass += 1
    runs.append((start, len(lengths)))
    return runs
