"""The runtimes give the package's vectors: torch as it ships, the fp32 ONNX export, and the
int8 graph close to them; the tokenizers library gives the package's tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from redline.exceptions import ModelError
from redline.serve.minilm import MiniLMModel
from redline.serve.model_files import ModelFiles
from redline.serve.onnx_export import graph_for
from redline.serve.runtimes import OnnxRunner, Runtime, TorchRunner, make_runners
from tests.serve._sentences import english_sentences

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
    cosines: np.ndarray = np.sum(a * b, axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )
    return cosines


def _onnx(minilm: MiniLMModel, runtime: Runtime = "onnx", workers: int = 1) -> list[OnnxRunner]:
    runners = make_runners(
        minilm.files,
        runtime,
        workers=workers,
        threads=1,
        cache=minilm.cache,
    )
    assert all(isinstance(r, OnnxRunner) for r in runners)
    return runners  # type: ignore[return-value]


@pytest.mark.parametrize("pass_size", [1, 3, 16])
def test_onnx_runner_equals_the_package_encoder(minilm: MiniLMModel, pass_size: int) -> None:
    texts = [*ODD, *(f"sentence number {i} about caches" for i in range(20))]
    raw = minilm.encoder.encode(texts, normalize_embeddings=True)
    (runner,) = _onnx(minilm)
    served = runner.encode(texts, pass_size)
    assert served.shape == (len(texts), 384)
    assert served.dtype == np.float32
    assert np.all(_cosines(served, raw) >= 0.9999)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_the_tokenizer_gives_the_package_tokens(minilm: MiniLMModel) -> None:
    texts = [*ODD, "a short one", "Café naïve résumé — déjà vu"]
    expected = minilm.encoder.tokenizer(
        texts, padding=True, truncation="longest_first", max_length=256
    )
    encodings = minilm.files.tokenizer().encode_batch(texts)
    assert [e.ids for e in encodings] == expected["input_ids"]
    assert [e.attention_mask for e in encodings] == expected["attention_mask"]
    assert [e.type_ids for e in encodings] == expected["token_type_ids"]
    assert max(len(e.ids) for e in encodings) == 256  # the long input, cut at max_seq_length


def test_runners_are_one_per_worker_with_their_own_tokenizer(minilm: MiniLMModel) -> None:
    first, second = _onnx(minilm, workers=2)
    assert first.tokenizer is not second.tokenizer
    assert first.session is second.session  # one graph, run concurrently
    torch = make_runners(
        minilm.files, "torch", workers=2, threads=1, cache=minilm.cache, encoder=minilm.encoder
    )
    assert all(isinstance(r, TorchRunner) for r in torch)
    assert [r.encoder is minilm.encoder for r in torch] == [True, False]  # type: ignore[attr-defined]


def test_an_unknown_runtime_is_a_model_error(minilm: MiniLMModel) -> None:
    with pytest.raises(ModelError, match=r"one of \['onnx', 'onnx-int8', 'torch'\], got 'trt'"):
        make_runners(minilm.files, "trt", workers=1, threads=1, cache=minilm.cache)  # type: ignore[arg-type]


def test_a_model_the_export_does_not_cover_is_refused(minilm: MiniLMModel, tmp_path: Path) -> None:
    # The same model without its Normalize module: its vectors are not unit length.
    folder = tmp_path / "unnormalised"
    shutil.copytree(minilm.files.directory, folder, copy_function=_link)
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").unlink()
    (folder / "modules.json").write_text(json.dumps(modules[:2]))
    files = ModelFiles("unnormalised", "1", folder)
    for runtime in ("onnx", "onnx-int8"):
        with pytest.raises(ModelError, match="use the torch runtime"):
            make_runners(files, runtime, workers=1, threads=1, cache=minilm.cache)
    (runner,) = make_runners(files, "torch", workers=1, threads=1, cache=minilm.cache)
    assert runner.encode(["still served"], 1).shape == (1, 384)


def test_int8_vectors_stay_close_to_fp32(minilm: MiniLMModel) -> None:
    sentences = english_sentences(400)
    (fp32,) = _onnx(minilm)
    (int8,) = _onnx(minilm, "onnx-int8")
    assert fp32.session is not int8.session
    reference, quantized = fp32.encode(sentences, 16), int8.encode(sentences, 16)
    cosines = _cosines(reference, quantized)
    assert cosines.mean() >= 0.99
    assert cosines.min() >= 0.97
    assert _recall_at_10(reference, quantized) >= 0.90
    import onnx

    path = graph_for(minilm.files, "onnx-int8", minilm.cache)
    kinds = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    assert kinds & {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulNBits"}, kinds


def _recall_at_10(reference: np.ndarray, other: np.ndarray) -> float:
    """How many of each sentence's 10 nearest neighbours under *reference* *other* keeps."""
    found = []
    for a, b in ((reference, reference), (other, other)):
        similarity = a @ b.T
        np.fill_diagonal(similarity, -2.0)
        found.append(np.argsort(-similarity, axis=1)[:, :10])
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(*found, strict=True)]))


def _link(source: str, target: str) -> None:
    Path(target).symlink_to(source)
