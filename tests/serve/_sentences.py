"""Real English sentences that ship with Python: the help topics of ``pydoc_data``."""

from __future__ import annotations

import itertools

from redline.serve.smoothing import help_sentences


def english_sentences(count: int) -> list[str]:
    """The first *count* distinct sentences of 5 to 60 words from pydoc's help topics."""
    sentences = list(itertools.islice(help_sentences(), count))
    if len(sentences) < count:
        raise ValueError(f"pydoc's topics hold only {len(sentences)} sentences, asked for {count}")
    return sentences
