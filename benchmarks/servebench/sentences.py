"""English text that ships with Python: real sentences for quality, ~13-word ones for load.

Both come from ``pydoc_data.topics`` (the language reference's prose), so they need nothing
downloaded and are the same on every machine.

Example::

    real_sentences(300)[0]        # a sentence of the Python reference, 6-40 words
    load_sentences(3, seed=1)     # ['reference object names ... 0', ...] all distinct
"""

from __future__ import annotations

import random
import re

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"^[a-z][a-z'-]{1,15}$")


def _prose() -> list[str]:
    from pydoc_data.topics import topics

    blocks: list[str] = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            # Code samples and grammar rules are indented or full of symbols: keep prose.
            if block.startswith((" ", "\t")) or block.count("::=") or block.count(">>>"):
                continue
            blocks.append(" ".join(block.split()))
    return blocks


def real_sentences(limit: int) -> list[str]:
    """Up to *limit* distinct prose sentences of 6 to 40 words, in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    for block in _prose():
        for sentence in _SPLIT.split(block):
            words = sentence.split()
            if 6 <= len(words) <= 40 and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
                if len(out) == limit:
                    return out
    return out


def vocabulary() -> list[str]:
    """The distinct plain lower-case words of the prose, sorted."""
    words = {word.strip(".,;:()\"'") for block in _prose() for word in block.lower().split()}
    return sorted(word for word in words if _WORD.match(word))


def load_sentences(count: int, seed: int = 0, words: int = 12) -> list[str]:
    """*count* distinct sentences: *words* words of the prose's vocabulary, then a number."""
    rng = random.Random(seed)
    pool = vocabulary()
    return [
        " ".join(rng.choice(pool) for _ in range(words)) + f" {seed * 10_000_000 + n}."
        for n in range(count)
    ]
