"""Real English sentences that ship with Python: the help topics of ``pydoc_data``."""

from __future__ import annotations

import re


def english_sentences(count: int) -> list[str]:
    """The first *count* distinct sentences of 5 to 60 words from pydoc's help topics."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for _, text in sorted(topics.items()):
        for paragraph in re.split(r"\n\s*\n", text):
            flat = " ".join(paragraph.split())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                letters = sum(c.isalpha() for c in sentence)
                if 5 <= len(sentence.split()) <= 60 and letters >= 0.6 * len(sentence):
                    seen.setdefault(sentence)
                    if len(seen) == count:
                        return list(seen)
    raise ValueError(f"pydoc's topics hold only {len(seen)} sentences, asked for {count}")
