"""Activation smoothing before int8: move each matrix product's outlier channels into its weights.

A transformer's matrix products take inputs with a few channels far larger than the rest
(after a LayerNorm, after the GELU). Quantized, those channels set the scale and flatten the
others. Smoothing divides each input channel ``j`` by a factor ``s_j`` and multiplies row ``j``
of the weight matrix by the same factor, so the product is unchanged in fp32 while the input's
range shrinks and the weights take part of it::

    s_j = max|x_j| ** alpha / max|w_j| ** (1 - alpha)

The maxima of the inputs come from running the fp32 graph on real sentences
(:func:`calibration_texts`, Python's own help topics, so nothing is downloaded). The division
is one ``Mul`` per input tensor, shared by the products that read it (query, key and value).

Example::

    ranges = input_ranges(fp32_graph, tokenizer, calibration_texts(256))
    smooth(model, ranges, alpha=0.5)   # model: the onnx.ModelProto of that graph, changed in place
"""

from __future__ import annotations

import itertools
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from redline.exceptions import ModelError

__all__ = ["calibration_texts", "help_sentences", "input_ranges", "smooth", "weight_matmuls"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def calibration_texts(count: int) -> list[str]:
    """*count* sentences of pydoc's help topics, last topics first (see :func:`help_sentences`).

    Benchmarks that judge the int8 vectors leave these out of what they measure.
    """
    texts = list(itertools.islice(help_sentences(reverse=True), count))
    if len(texts) < count:
        raise ModelError(
            f"pydoc's topics hold only {len(texts)} sentences, calibration asks {count}"
        )
    return texts


def help_sentences(*, reverse: bool = False) -> Iterator[str]:
    """The distinct sentences of 5 to 60 words in Python's help topics (``pydoc_data``), in
    the topics' sorted order (*reverse*: last topic first): real English that ships offline."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # pragma: no cover - part of the standard library
        raise ModelError(f"int8 calibration reads Python's pydoc_data: {exc}") from exc
    seen: set[str] = set()
    for _, text in sorted(topics.items(), reverse=reverse):
        for paragraph in re.split(r"\n\s*\n", text):
            flat = " ".join(paragraph.split())
            for sentence in _SENTENCE_END.split(flat):
                letters = sum(c.isalpha() for c in sentence)
                wanted = 5 <= len(sentence.split()) <= 60 and letters >= 0.6 * len(sentence)
                if wanted and sentence not in seen:
                    seen.add(sentence)
                    yield sentence


def weight_matmuls(graph: Any) -> dict[str, list[Any]]:
    """The graph's MatMuls with a 2-D weight matrix, grouped by the input tensor they read."""
    weights = {init.name: init for init in graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def input_ranges(
    graph: Path, tokenizer: Any, texts: list[str], pass_size: int = 16
) -> dict[str, npt.NDArray[np.float32]]:
    """Per channel, the largest |value| each weight MatMul's input takes on *texts*.

    *graph* is the fp32 graph; *tokenizer* pads and truncates as the runners' do.
    """
    import onnx
    from onnx import TensorProto, helper

    from redline.serve.runtimes import onnx_session, token_feeds

    model = onnx.load(str(graph))
    names = list(weight_matmuls(model.graph))
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    ranges: dict[str, npt.NDArray[np.float32]] = {}
    with tempfile.TemporaryDirectory(prefix="redline-calibration-") as folder:
        probe = Path(folder) / "probe.onnx"
        onnx.save(model, str(probe))
        session = onnx_session(probe, 1)
        ordered = sorted(texts, key=len)  # similar lengths per pass, as the runners pad
        for start in range(0, len(ordered), pass_size):
            feeds = token_feeds(tokenizer, ordered[start : start + pass_size])
            for name, value in zip(names, session.run(names, feeds), strict=True):
                peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
                ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smooth(model: Any, ranges: dict[str, npt.NDArray[np.float32]], alpha: float) -> int:
    """Smooth, in place, every weight MatMul of *model* whose input *ranges* measured.

    Returns how many input tensors were smoothed. In fp32 the graph computes what it did.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    divisions: dict[str, Any] = {}
    for name, members in weight_matmuls(graph).items():
        if name not in ranges or any(readers[node.input[1]] > 1 for node in members):
            continue  # a weight another node reads too cannot be rescaled for this one
        arrays = [numpy_helper.to_array(weights[node.input[1]]) for node in members]
        weight_peak = np.abs(np.concatenate(arrays, axis=1)).max(axis=1)
        factors = ranges[name] ** alpha / np.maximum(weight_peak ** (1 - alpha), 1e-5)
        factors = np.clip(factors, 1e-2, 1e3).astype(np.float32)
        smoothed = f"{name}_smoothed"
        graph.initializer.append(numpy_helper.from_array(1 / factors, f"{smoothed}_divisor"))
        divisions[smoothed] = helper.make_node(
            "Mul", [name, f"{smoothed}_divisor"], [smoothed], name=f"{smoothed}_mul"
        )
        for node, array in zip(members, arrays, strict=True):
            scaled = (array * factors[:, None]).astype(np.float32)
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(scaled, node.input[1]))
            node.input[0] = smoothed
    smoothed_inputs = len(divisions)
    nodes = []
    for node in graph.node:
        division = divisions.pop(node.input[0], None) if node.input else None
        if division is not None:
            nodes.append(division)  # just before the first product that reads it
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return smoothed_inputs
