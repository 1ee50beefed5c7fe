"""How one model worker turns texts into unit vectors: with ONNX Runtime or with torch.

``onnx`` runs the model's transformer exported to ONNX (fp32) with ONNX Runtime; the mean
pooling and normalisation the package's model does after the transformer are done in numpy,
and the tokenizer is the ``tokenizers`` library reading the model's ``tokenizer.json``. Same
weights, same tokens: the vectors agree with torch's to a cosine of 0.9999+. ``onnx-int8``
runs the same graph with its weights quantized to int8 (faster, slightly different vectors:
see :mod:`redline.serve.onnx_export`). Both graphs are built once and kept in a
:class:`~redline.serve.graph_cache.GraphCache`: a start that finds them imports neither torch
nor transformers. ``torch`` runs the package's ``SentenceTransformer`` as it ships.

Example::

    runners = make_runners(files, "onnx", workers=2, threads=1, cache=GraphCache(folder))
    vectors = runners[0].encode(["a cat", "a dog"], pass_size=16)   # (2, 384) float32
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from redline.exceptions import ModelError
from redline.serve.graph_cache import GraphCache
from redline.serve.model_files import ModelFiles

__all__ = [
    "RUNTIMES",
    "OnnxRunner",
    "Runner",
    "Runtime",
    "TorchRunner",
    "make_runners",
    "token_feeds",
]

Runtime = Literal["onnx", "onnx-int8", "torch"]
RUNTIMES: tuple[Runtime, ...] = ("onnx", "onnx-int8", "torch")


class Runner(Protocol):
    """One worker's forward passes; each worker has its own (tokenizers are not shared)."""

    def encode(self, texts: list[str], pass_size: int) -> npt.NDArray[np.float32]:
        """Unit-length vectors of *texts*, run in passes of at most *pass_size*."""
        ...


class TorchRunner:
    """The package's ``SentenceTransformer`` itself (it sorts by length and pads per pass)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def encode(self, texts: list[str], pass_size: int) -> npt.NDArray[np.float32]:
        vectors = self.encoder.encode(
            texts,
            batch_size=pass_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class OnnxRunner:
    """The exported transformer in an ONNX Runtime session, then mean pooling and L2 norm.

    The session is shared by all workers (ONNX Runtime runs concurrent calls); *tokenizer*
    (a ``tokenizers.Tokenizer`` that truncates and pads, see
    :meth:`~redline.serve.model_files.ModelFiles.tokenizer`) is this worker's own.
    *on_tokens*, when given, gets each pass's texts and their token counts (the attention
    mask's length: with special tokens, cut at the model's input length).
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        dimension: int,
        on_tokens: Callable[[list[str], list[int]], None] | None = None,
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.dimension = dimension
        self.on_tokens = on_tokens

    def encode(self, texts: list[str], pass_size: int) -> npt.NDArray[np.float32]:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Longest first, as the package's encode does, so each pass pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(texts), pass_size):
            rows = order[start : start + pass_size]
            out[rows] = self._pass([texts[i] for i in rows])
        return out

    def _pass(self, texts: list[str]) -> npt.NDArray[np.float32]:
        feeds = token_feeds(self.tokenizer, texts)
        mask = feeds["attention_mask"]
        (hidden,) = self.session.run(None, feeds)
        if self.on_tokens is not None:
            self.on_tokens(texts, mask.sum(axis=1).tolist())
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled / norms, dtype=np.float32)


def token_feeds(tokenizer: Any, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
    """The exported graph's inputs for *texts*, tokenized (padded, truncated) by *tokenizer*."""
    encodings = tokenizer.encode_batch_fast(texts)  # no offsets: GIL released
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def make_runners(
    files: ModelFiles,
    runtime: Runtime,
    *,
    workers: int,
    threads: int,
    cache: GraphCache,
    encoder: Any = None,
    on_tokens: Callable[[list[str], list[int]], None] | None = None,
) -> list[Runner]:
    """*workers* runners for the model in *files*; ``ModelError`` if it cannot be loaded.

    ``torch``: the first runner uses *encoder* (loaded from *files* when None) and the others
    deep copies, with *threads* torch threads. ``onnx`` / ``onnx-int8``: the graph comes from
    *cache* (built on a miss), one session runs it with *threads* intra-op threads per call,
    and each runner gets its own tokenizer; *on_tokens* gets the token counts of each pass
    (see :class:`OnnxRunner`).
    """
    if runtime == "torch":
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - the serve extra installs it
            raise ModelError(f"the torch runtime needs torch: {exc}") from exc
        torch.set_num_threads(threads)
        first = encoder if encoder is not None else files.load_encoder()
        return [
            TorchRunner(first),
            *(TorchRunner(copy.deepcopy(first)) for _ in range(workers - 1)),
        ]
    from redline.serve.onnx_export import graph_for

    if runtime == "onnx" or runtime == "onnx-int8":
        graph = graph_for(files, runtime, cache)
    else:
        raise ModelError(f"model runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    session = onnx_session(graph, threads)
    return [
        OnnxRunner(session, files.tokenizer(), files.dimension, on_tokens) for _ in range(workers)
    ]


def onnx_session(graph: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session over the graph file *graph* with *threads* intra-op threads."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise ModelError(f"the onnx runtime needs onnxruntime: {exc}") from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads sleep instead of spinning: the event loop shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"ONNX Runtime cannot load the model graph {graph}: {exc}") from exc
