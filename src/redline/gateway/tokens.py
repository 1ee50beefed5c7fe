"""Token accounting per input: an upstream reports one ``prompt_tokens`` per call, and the
gateway needs each input's share (a cached input is billed what it cost when it was fresh).

The share comes from a word-count estimate: when the estimates add up to the upstream's
total they are taken as they are (exact for upstreams that count words, and for any one-input
call); otherwise the total is divided in proportion to them, largest remainder first, so
every call's shares always add up to exactly what the upstream reported.

Example::

    split_tokens(7, [2, 3])      # [3, 4]: 7 divided 2:3
    split_tokens(5, [2, 3])      # [2, 3]: the estimates were right
"""

from __future__ import annotations

__all__ = ["estimate_tokens", "split_tokens"]


def estimate_tokens(text: str) -> int:
    """Whitespace-separated words, at least 1 (redline's own fallback count)."""
    return max(1, len(text.split()))


def split_tokens(total: int, estimates: list[int]) -> list[int]:
    """Divide *total* over the inputs in proportion to *estimates* (see the module docstring).

    A negative *total* (the upstream reported none) returns the estimates.
    """
    if total < 0 or sum(estimates) == total or not estimates:
        return list(estimates)
    weight = sum(estimates)
    exact = [total * estimate / weight for estimate in estimates]
    shares = [int(value) for value in exact]
    short = total - sum(shares)
    order = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for index in order[:short]:
        shares[index] += 1
    return shares
