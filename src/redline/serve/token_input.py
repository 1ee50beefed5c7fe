"""OpenAI's token-id inputs (``[101, 2023]`` or ``[[101], [2023, 102]]``) carried through the
server as marker strings, so the cache, coalescing and batching treat them like any input.

A marker is ``"\\x00ids:"`` + the comma-separated ids: it never equals a normalised text of
the same ids, so its cache entry is its own. Local models turn markers back into text with
their tokenizer (``decode_tokens``); upstream models receive the ids as they came. Usage counts
one token per id, as OpenAI does.

Example::

    marker = encode_ids([101, 2023])      # '\\x00ids:101,2023'
    is_ids(marker), decode_ids(marker)    # (True, [101, 2023])
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = [
    "MAX_IDS",
    "TokenDecoder",
    "decode_ids",
    "encode_ids",
    "id_count",
    "is_ids",
    "token_inputs",
]

PREFIX = "\x00ids:"
MAX_IDS = 8192
"""Most ids one input may have (OpenAI's per-input limit is 8,191 tokens)."""


@runtime_checkable
class TokenDecoder(Protocol):
    """A local model that can turn token ids back into its text."""

    def decode_tokens(self, ids: list[int]) -> str: ...


def encode_ids(ids: list[int]) -> str:
    """The marker string of one token-id input."""
    return PREFIX + ",".join(str(i) for i in ids)


def is_ids(text: str) -> bool:
    """Whether *text* is a marker made by :func:`encode_ids`."""
    return text.startswith(PREFIX)


def decode_ids(text: str) -> list[int]:
    """The ids of a marker."""
    return [int(part) for part in text[len(PREFIX) :].split(",")]


def id_count(text: str) -> int:
    """How many ids a marker holds (its token count)."""
    return text.count(",") + 1


def token_inputs(value: Any) -> list[str] | None:
    """Markers for ``[ids]`` or ``[[ids], ...]``; None when *value* is not token-id input.

    Raises ``ValueError`` for an empty id list, a negative id or too many ids.
    """
    if not isinstance(value, list) or not value:
        return None
    if all(_is_id(item) for item in value):
        lists = [value]
    elif all(isinstance(item, list) for item in value):
        if not all(item and all(_is_id(i) for i in item) for item in value):
            raise ValueError("token-id input must be non-empty lists of non-negative integers")
        lists = value
    else:
        return None
    for ids in lists:
        if any(i < 0 for i in ids):
            raise ValueError("token ids must be non-negative integers")
        if len(ids) > MAX_IDS:
            raise ValueError(f"a token-id input may have at most {MAX_IDS} ids, got {len(ids)}")
    return [encode_ids(ids) for ids in lists]


def _is_id(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)
