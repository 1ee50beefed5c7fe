"""The JSON of recently served cached vectors, and their inputs' token counts, kept beside the
cache so that answering a cache hit again costs a splice, not an encoding.

Formatting 384 floats as JSON takes longer than all the rest of a cache hit's own work, and a
hot input is asked for again and again. An :class:`EncodedHits` memo keeps, per cache key, the
value it was made from (as the cache stores it), the input's token count and the encoded vector
per ``encoding_format``. An entry counts only while the cache still holds that same value (by
identity: a value stored anew is a new object, so it is encoded anew; the entry's reference
keeps the old one's identity from being reused); the memo holds at most *max_entries* keys, the
oldest dropped first.

Example::

    memo = EncodedHits()
    entry = memo.entry("emb:m:1:384:ab12", vector, 384)   # new: no JSON, no count yet
    entry.json("float")                               # b'[0.01,...]', encoded once
"""

from __future__ import annotations

from base64 import b64encode
from typing import Any

import numpy as np
import orjson

__all__ = ["EncodedHit", "EncodedHits", "base64_floats"]


def base64_floats(vector: Any) -> bytes:
    """A vector as OpenAI's ``base64`` encoding has it: its little-endian float32 bytes."""
    return b64encode(np.asarray(vector).astype("<f4", copy=False).tobytes())


class EncodedHit:
    """One cached vector's encodings and its input's token count (``None``: not counted);
    ``answers`` keeps, by ``encoding_format``, the whole answer of a request for this input
    alone (what its caller spliced: it depends on nothing else)."""

    __slots__ = ("_base64", "_float", "answers", "source", "tokens", "vector")

    def __init__(self, source: object, vector: Any) -> None:
        self.source = source
        self.vector = vector
        self.tokens: int | None = None
        self._float: bytes | None = None
        self._base64: bytes | None = None
        self.answers: dict[str, bytes] = {}

    def json(self, encoding_format: str) -> bytes:
        """The vector as the ``embedding`` value of an answer: a JSON array of floats, or
        (``base64``) a JSON string of its little-endian float32 bytes."""
        if encoding_format == "base64":
            if self._base64 is None:
                self._base64 = b'"' + base64_floats(self.vector) + b'"'
            return self._base64
        if self._float is None:
            self._float = orjson.dumps(self.vector, option=orjson.OPT_SERIALIZE_NUMPY)
        return self._float

    def __repr__(self) -> str:
        return f"EncodedHit(tokens={self.tokens}, float={self._float is not None})"


class EncodedHits:
    """:class:`EncodedHit` entries by cache key, at most *max_entries* of them."""

    def __init__(self, max_entries: int = 2048) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: dict[str, EncodedHit] = {}

    def entry(self, key: str, value: Any, width: int) -> EncodedHit:
        """The entry of *key* for the cache's *value*, a vector of *width* floats (a new
        entry if the value is not the very object the entry was made from)."""
        entries = self._entries
        hit = entries.get(key)
        if hit is not None and hit.source is value:
            return hit
        source = value
        if not (
            isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (width,)
        ):  # as the general path reads such a value: float32, one row
            value = np.asarray(value, dtype=np.float32).reshape(width)
        hit = EncodedHit(source, value)
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = hit
        return hit

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"EncodedHits({len(self._entries)}/{self.max_entries})"
