"""The built-in model: length-sorted passes on parallel workers equal the package's encoder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from redline.serve.minilm import MiniLMModel
from redline.serve.runtimes import RUNTIMES, Runtime

pytestmark = pytest.mark.model

WORDS = ["cache", "model", "server", "batch", "latency", "vector", "queue", "redis", "nginx"]


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(count)]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_parallel_workers_equal_the_raw_model_row_by_row(
    minilm: MiniLMModel, runtime: Runtime
) -> None:
    texts = _texts(40, seed=7)
    model = MiniLMModel(
        minilm.files,
        sub_batch=8,
        workers=3,
        runtime=runtime,
        cache=minilm.cache,
        encoder=minilm.encoder,
    )
    assert model.runtime == runtime
    served = model.batch(texts)
    raw = minilm.encoder.encode(texts, normalize_embeddings=True)
    assert served.shape == (40, 384)
    cosines = np.sum(served * raw, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(raw, axis=1)
    )
    # int8 weights move the vectors a little (see test_runtimes); the others are exact.
    assert np.all(cosines >= (0.97 if runtime == "onnx-int8" else 0.9999))


def test_bad_worker_counts_are_refused(minilm: MiniLMModel) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        MiniLMModel(minilm.files, workers=0)
    with pytest.raises(ValueError, match="sub_batch must be >= 1"):
        MiniLMModel(minilm.files, sub_batch=0)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        MiniLMModel(minilm.files, threads=0)


def test_the_served_model_runs_on_onnx_by_default(minilm: MiniLMModel) -> None:
    assert minilm.runtime == "onnx"
    assert "runtime='onnx'" in repr(minilm)
    assert minilm.version == minilm.files.version
    assert minilm.max_input_tokens == 256


def test_token_counts_match_the_package_tokenizer(minilm: MiniLMModel) -> None:
    texts = ["hello world", "", "word " * 400, "Zeichen, 日本語のテキスト, emoji 🚀"]
    expected = [
        min(len(ids), 256)
        for ids in minilm.encoder.tokenizer(texts, add_special_tokens=True)["input_ids"]
    ]
    assert minilm.count_tokens(texts) == expected


def test_an_input_just_embedded_is_counted_from_its_forward_pass(minilm: MiniLMModel) -> None:
    model = MiniLMModel(minilm.files, workers=2, cache=minilm.cache)
    texts = ["hello world", "word " * 400, "Zeichen, 日本語のテキスト, emoji 🚀", *_texts(20, 3)]
    expected = [
        min(len(ids), 256)
        for ids in minilm.encoder.tokenizer(texts, add_special_tokens=True)["input_ids"]
    ]
    model.batch(texts)
    assert f"noted={len(set(texts))}" in repr(model._counter)
    assert model.count_tokens(texts) == expected
    assert "memo=0/" in repr(model._counter)  # nothing tokenized again to count
