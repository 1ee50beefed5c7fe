"""Both runtimes give the package's vectors: torch as it ships, and the ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from redline.exceptions import ModelError
from redline.serve.minilm import MiniLMModel
from redline.serve.runtimes import OnnxRunner, TorchRunner, make_runners

pytestmark = pytest.mark.model

ODD = [
    "  leading and trailing spaces  ",
    "x",
    "word " * 400,  # past the 256-token limit: truncated the same way
    "Zeichen, 日本語のテキスト, emoji 🚀",
    "\ttab\nnewline\r\n",
    "UPPER and lower Case",
    "",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("pass_size", [1, 3, 16])
def test_onnx_runner_equals_the_package_encoder(minilm: MiniLMModel, pass_size: int) -> None:
    texts = [*ODD, *(f"sentence number {i} about caches" for i in range(20))]
    raw = minilm.encoder.encode(texts, normalize_embeddings=True)
    (runner,) = make_runners(minilm.encoder, "onnx", workers=1, threads=1)
    assert isinstance(runner, OnnxRunner)
    served = runner.encode(texts, pass_size)
    assert served.shape == (len(texts), 384)
    assert served.dtype == np.float32
    assert np.all(_cosines(served, raw) >= 0.9999)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_runners_are_one_per_worker_with_their_own_tokenizer(minilm: MiniLMModel) -> None:
    onnx = make_runners(minilm.encoder, "onnx", workers=2, threads=1)
    assert all(isinstance(r, OnnxRunner) for r in onnx)
    first, second = onnx
    assert isinstance(first, OnnxRunner)
    assert isinstance(second, OnnxRunner)
    assert first.tokenizer is not second.tokenizer
    assert first.session is second.session  # one exported graph, run concurrently
    torch = make_runners(minilm.encoder, "torch", workers=2, threads=1)
    assert all(isinstance(r, TorchRunner) for r in torch)
    assert [r.encoder is minilm.encoder for r in torch] == [True, False]  # type: ignore[attr-defined]


def test_an_unknown_runtime_is_a_model_error(minilm: MiniLMModel) -> None:
    with pytest.raises(ModelError, match=r"one of \['onnx', 'torch'\], got 'tensorrt'"):
        make_runners(minilm.encoder, "tensorrt", workers=1, threads=1)  # type: ignore[arg-type]


def test_a_model_the_export_does_not_cover_is_refused(minilm: MiniLMModel) -> None:
    unnormalised = SentenceTransformer(modules=[minilm.encoder[0], minilm.encoder[1]])
    with pytest.raises(ModelError, match="use the torch runtime"):
        make_runners(unnormalised, "onnx", workers=1, threads=1)
    (runner,) = make_runners(unnormalised, "torch", workers=1, threads=1)  # torch still runs it
    assert runner.encode(["still served"], 1).shape == (1, 384)
