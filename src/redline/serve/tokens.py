"""Token counting for usage accounting: a Hugging Face ``tokenizers.Tokenizer`` behind a memo,
with counts capped at the model's input length as the model sees them.

Short texts (the common, repeated ones) are remembered; long ones are counted on a prefix cut
at a space (a BERT-style pre-tokenizer splits there, so the prefix's tokens are the first tokens
of the whole) and the whole text only when the prefix does not reach the cap; they are encoded
together with ``encode_batch_fast``, which runs without the GIL.

The model's own forward pass tokenizes every input it embeds: :meth:`TokenCounter.note` takes
the counts it found (the attention mask's length, cut at the same cap), so that counting an
input just embedded, for its usage record, costs a dict lookup, not a second tokenization on
the event loop.

Example::

    counter = TokenCounter(Tokenizer.from_file("tokenizer.json"), max_tokens=256)
    counter.count(["a cat", "a dog sat"])   # [4, 5]: with [CLS] and [SEP]
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

__all__ = ["TokenCounter"]

# Counts are remembered for up to this many texts of up to this many characters
# (at most ~40 MB of strings).
_MEMO_ENTRIES = 16_384
_MEMO_MAX_CHARS = 2_048
# Counts noted by the forward pass are kept for at most this many texts, the oldest dropped
# first (the memo keeps what is counted again after that).
_NOTED_ENTRIES = 4_096
# A long text is first counted on its first (max_tokens * this) characters: English runs at
# 4-5 characters a token, so the prefix nearly always reaches the cap.
_PREFIX_CHARS_PER_TOKEN = 8


class TokenCounter:
    """Tokens per text (with special tokens, capped at *max_tokens*) from *tokenizer*.

    *tokenizer* is a ``tokenizers.Tokenizer`` of its own: the counter turns its truncation and
    padding off, and a fast tokenizer must not be shared with a thread encoding for the model.
    """

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._prefix_chars = max_tokens * _PREFIX_CHARS_PER_TOKEN
        # Repeated inputs (the cached ones) are counted once: tokenizing costs more than
        # answering a cache hit does.
        self._memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(self._count_one)
        self._noted: dict[str, int] = {}

    def note(self, texts: list[str], counts: list[int]) -> None:
        """Remember the token counts *counts* of *texts* as the model's tokenizer found them
        (with special tokens, cut at *max_tokens*); the next :meth:`count` of each text takes
        its count from here. Safe to call from another thread (one dict write per text)."""
        noted = self._noted
        for text, count in zip(texts, counts, strict=True):
            if len(text) <= _MEMO_MAX_CHARS:
                if len(noted) >= _NOTED_ENTRIES:
                    with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                        del noted[next(iter(noted))]  # another thread may drop it first
                noted[text] = min(count, self.max_tokens)

    def count(self, texts: list[str]) -> list[int]:
        """Tokens per text."""
        memo, noted = self._memo, self._noted
        counts = [
            -1 if len(text) > _MEMO_MAX_CHARS else noted.get(text) or memo(text) for text in texts
        ]
        long = [index for index, count in enumerate(counts) if count < 0]
        if long:
            for index, count in zip(long, self._count_long([texts[i] for i in long]), strict=True):
                counts[index] = count
        return counts

    def _count_one(self, text: str) -> int:
        tokens = len(self._tokenizer.encode(text, add_special_tokens=True).ids)
        return min(tokens, self.max_tokens)

    def _count_long(self, texts: list[str]) -> list[int]:
        """Counts of long texts: on a prefix where that reaches the cap, else on the whole."""
        prefixes = [self._prefix(text) for text in texts]
        counts = self._encode_lengths(prefixes)
        redo = [i for i, count in enumerate(counts) if count < self.max_tokens]
        redo = [i for i in redo if len(prefixes[i]) < len(texts[i])]
        if redo:
            for index, count in zip(
                redo, self._encode_lengths([texts[i] for i in redo]), strict=True
            ):
                counts[index] = count
        return [min(count, self.max_tokens) for count in counts]

    def _prefix(self, text: str) -> str:
        """*text* up to the last space within the prefix length (all of it if there is none)."""
        if len(text) <= self._prefix_chars:
            return text
        cut = text.rfind(" ", 0, self._prefix_chars)
        return text[:cut] if cut > 0 else text

    def _encode_lengths(self, texts: list[str]) -> list[int]:
        # Without offsets: encode_batch's char offsets hold the GIL for tens of milliseconds
        # on a maximal request while it builds its answer (measured: 39 ms of 690), stalling
        # the event loop; encode_batch_fast releases it throughout.
        encodings = self._tokenizer.encode_batch_fast(texts, add_special_tokens=True)
        return [len(encoding) for encoding in encodings]

    def __repr__(self) -> str:
        info = self._memo.cache_info()
        return (
            f"TokenCounter(max_tokens={self.max_tokens}, memo={info.currsize}/{info.maxsize}, "
            f"noted={len(self._noted)})"
        )
