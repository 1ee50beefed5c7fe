"""A light, deterministic fake model for tests, load balancing demos and benchmarks.

Example::

    model = HashingModel(dimension=8)
    model.batch(["hello"]) == model.batch(["hello"])   # same text, same unit vector

    # a server that starts in well under two seconds:
    # redline serve --model redline.serve.testing:create_hashing_model
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import numpy as np
import numpy.typing as npt

__all__ = ["HashingModel", "create_hashing_model"]


class HashingModel:
    """Embeds a text as a unit vector seeded by its BLAKE2b hash: instant and deterministic.

    *delay* seconds are slept per batch (to simulate a slow model); ``calls`` and ``inputs``
    record what the server asked for, so tests can count model work.
    """

    def __init__(
        self,
        dimension: int = 384,
        *,
        name: str = "hashing",
        version: str = "1",
        delay: float = 0.0,
        max_input_tokens: int = 512,
    ) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be >= 1, got {dimension}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.name = name
        self.version = version
        self.dimension = dimension
        self.delay = delay
        self.max_input_tokens = max_input_tokens
        self.calls = 0
        self.inputs: list[str] = []
        self.warmed = False
        self._lock = threading.Lock()

    def warmup(self) -> None:
        """Run one batch (like a real model would) and mark the model warm."""
        self.batch(["warmup"])
        self.warmed = True

    def batch(self, inputs: list[str]) -> npt.NDArray[np.float32]:
        """One unit vector per input."""
        with self._lock:
            self.calls += 1
            self.inputs.extend(inputs)
        if self.delay:
            time.sleep(self.delay)
        out = np.empty((len(inputs), self.dimension), dtype=np.float32)
        for row, text in enumerate(inputs):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            vector = np.random.default_rng(seed).standard_normal(self.dimension)
            out[row] = vector / np.linalg.norm(vector)
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Whitespace-separated words (at least 1) per text."""
        return [max(1, len(text.split())) for text in texts]

    def __repr__(self) -> str:
        return (
            f"HashingModel(dimension={self.dimension}, delay={self.delay}, calls={self.calls}, "
            f"inputs={len(self.inputs)})"
        )


def create_hashing_model(dimension: int | None = None, delay: float | None = None) -> HashingModel:
    """Factory for ``--model redline.serve.testing:create_hashing_model``.

    Defaults come from ``REDLINE_HASHING_DIMENSION`` (384) and ``REDLINE_HASHING_DELAY_MS`` (0);
    ``REDLINE_HASHING_NAME`` renames the model (default ``hashing``).
    """
    if dimension is None:
        dimension = int(os.environ.get("REDLINE_HASHING_DIMENSION", "384"))
    if delay is None:
        delay = float(os.environ.get("REDLINE_HASHING_DELAY_MS", "0")) / 1000.0
    return HashingModel(
        dimension, delay=delay, name=os.environ.get("REDLINE_HASHING_NAME") or "hashing"
    )
