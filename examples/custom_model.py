"""A custom model plug-in for ``redline serve``: character-trigram feature hashing.

Any object with ``name``, ``version``, ``dimension`` and a synchronous ``batch(texts)``
returning one vector per text is a redline model (see ``redline.serve.model.Model``).
``count_tokens`` and ``warmup`` are optional. The server calls ``batch`` from its
micro-batcher's worker thread, so it may block (run torch, ONNX, a C library...).

Run it::

    PYTHONPATH=. redline serve --model examples.custom_model:create_model --port 8000
    curl -s 127.0.0.1:8000/v1/embeddings -H 'content-type: application/json' \
        -d '{"input": ["hello world", "help the world"]}'
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt


class TrigramModel:
    """Bag of hashed character trigrams, L2-normalised: similar spelling, similar vector."""

    name = "trigram-hash"
    version = "1"

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.max_input_tokens = 4096

    def batch(self, inputs: list[str]) -> npt.NDArray[np.float32]:
        """One unit vector per input text."""
        out = np.zeros((len(inputs), self.dimension), dtype=np.float32)
        for row, text in enumerate(inputs):
            padded = f"  {text.lower()} "
            for start in range(len(padded) - 2):
                gram = padded[start : start + 3].encode()
                bucket = int.from_bytes(hashlib.blake2b(gram, digest_size=4).digest(), "little")
                out[row, bucket % self.dimension] += 1.0
            norm = float(np.linalg.norm(out[row]))
            if norm:
                out[row] /= norm
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Trigrams per text."""
        return [max(1, len(text) + 1) for text in texts]

    def warmup(self) -> None:
        """Nothing to warm; a real model would run one batch here."""
        self.batch(["warm up"])


def create_model() -> TrigramModel:
    """The factory named on the command line (called once, with no arguments)."""
    return TrigramModel()
