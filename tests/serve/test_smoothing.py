"""Smoothing moves the inputs' outlier channels into the weights without changing what the fp32
graph computes, and the int8 graph made after it keeps more of the vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from redline.exceptions import ModelError
from redline.serve.minilm import MiniLMModel
from redline.serve.onnx_export import INT8_RECIPE, graph_for, quantize_int8
from redline.serve.runtimes import OnnxRunner, onnx_session
from redline.serve.smoothing import calibration_texts, input_ranges, smooth, weight_matmuls
from tests.serve._sentences import english_sentences

pytestmark = pytest.mark.model


def test_calibration_texts_are_distinct_real_sentences() -> None:
    texts = calibration_texts(256)
    assert len(texts) == len(set(texts)) == 256
    assert all(5 <= len(text.split()) <= 60 for text in texts)
    with pytest.raises(ModelError, match="calibration asks 1000000"):
        calibration_texts(1_000_000)


def test_smoothing_keeps_the_fp32_vectors_and_balances_each_product(
    minilm: MiniLMModel, tmp_path: Path
) -> None:
    fp32 = graph_for(minilm.files, "onnx", minilm.cache)
    tokenizer = minilm.files.tokenizer()
    ranges = input_ranges(fp32, tokenizer, calibration_texts(64))
    model = onnx.load(str(fp32))
    groups = len(weight_matmuls(model.graph))
    assert smooth(model, ranges, alpha=0.5) == groups == len(ranges) == 24  # 6 layers x 4
    smoothed = tmp_path / "smoothed.onnx"
    onnx.save(model, str(smoothed))

    sentences = english_sentences(200)
    before = _encode(fp32, minilm, sentences)
    after = _encode(smoothed, minilm, sentences)
    assert np.sum(before * after, axis=1).min() >= 0.99999

    # With alpha 0.5 each input channel's peak now equals its weight row's peak: the two
    # sides of the product share the range that quantizing either one must cover.
    balanced = input_ranges(smoothed, tokenizer, calibration_texts(64))
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for name, members in weight_matmuls(model.graph).items():
        rows = np.abs(np.concatenate([weights[node.input[1]] for node in members], axis=1))
        np.testing.assert_allclose(balanced[name], rows.max(axis=1), rtol=1e-3, err_msg=name)


def test_smoothing_brings_int8_closer_to_fp32(minilm: MiniLMModel, tmp_path: Path) -> None:
    fp32 = graph_for(minilm.files, "onnx", minilm.cache)
    sentences = english_sentences(400)
    reference = _encode(fp32, minilm, sentences)
    errors = {}
    for alpha in (None, INT8_RECIPE["smoothing"]):
        path = tmp_path / f"int8-{alpha}.onnx"
        recipe = {**INT8_RECIPE, "smoothing": alpha}
        quantize_int8(fp32, path, minilm.files.tokenizer(), recipe)
        cosines = np.sum(reference * _encode(path, minilm, sentences), axis=1)
        errors[alpha] = float(np.mean(1 - cosines))
    assert errors[INT8_RECIPE["smoothing"]] < 0.75 * errors[None], errors


def _encode(graph: Path, minilm: MiniLMModel, texts: list[str]) -> np.ndarray:
    files = minilm.files
    runner = OnnxRunner(onnx_session(graph, 1), files.tokenizer(), files.dimension)
    return runner.encode(texts, 16)
