"""Build the ONNX graphs the onnx runtimes run: the fp32 export and its int8 quantization.

:func:`export_fp32` loads the model with sentence-transformers (torch) and exports its
transformer with dynamic batch and sequence axes; the pooling and normalisation after it are
redone in numpy by the runner. :func:`quantize_int8` smooths that graph's activations and turns
it into int8 weights run by ONNX Runtime's block-wise int8 matrix product (see
:data:`INT8_RECIPE`). :func:`graph_for`
finds either in the :class:`GraphCache`, building it on a miss: a start that finds both never
imports torch.

Example::

    path = graph_for(files, "onnx-int8", GraphCache(default_cache_dir()))
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from redline.exceptions import ModelError
from redline.serve.graph_cache import GraphCache
from redline.serve.model_files import ModelFiles
from redline.serve.smoothing import calibration_texts, input_ranges, smooth, weight_matmuls

__all__ = ["EXPORT_SETTINGS", "INT8_RECIPE", "export_fp32", "graph_for", "quantize_int8"]

logger = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# Part of the cache key: change a value (or ``format``) when the export changes.
EXPORT_SETTINGS: dict[str, Any] = {"format": 1, "opset": 17, "output": "last_hidden_state"}

# Block-wise int8: each weight matrix gets one scale per ``block_size`` rows of each column,
# and at run time the activations are quantized per block of the same length
# (``accuracy_level`` 4). Small blocks keep an outlier from costing its whole row or tensor
# the precision that one scale per tensor (onnxruntime's ``quantize_dynamic``) loses. Before
# that, ``smoothing`` (alpha; None: off) moves the inputs' outlier channels into the weights,
# with input ranges measured on ``calibration_texts`` sentences (:mod:`~redline.serve.smoothing`):
# it lets blocks of 64 keep more of the vectors than blocks of 32 did without it, and run
# faster. Only MatMuls with a weight matrix are quantized; the products of two activations
# (attention scores, attention x values) and MatMuls whose names match a ``keep_fp32`` pattern
# stay fp32. benchmarks/runtime_bench.py measures the vectors and speed of this and the
# alternatives.
INT8_RECIPE: dict[str, Any] = {
    "format": 2,
    "block_size": 64,
    "accuracy_level": 4,
    "keep_fp32": [],
    "smoothing": 0.5,
    "calibration_texts": 256,
}

GraphKind = Literal["onnx", "onnx-int8"]


def graph_for(files: ModelFiles, kind: GraphKind, cache: GraphCache) -> Path:
    """The verified graph of *kind* for *files* in *cache*, exported / quantized on a miss."""
    files.check_onnx_layout()
    entry = f"{_safe(files.name)}-{_safe(files.version)}-{files.fingerprint()[:16]}"
    fp32_name = f"fp32-{_settings_hash(EXPORT_SETTINGS)}.onnx"

    def export(path: Path) -> None:
        export_fp32(files, path)

    if kind == "onnx":
        return cache.get_or_build(entry, fp32_name, export)
    if kind != "onnx-int8":
        raise ModelError(f"no ONNX graph of kind {kind!r}; use 'onnx' or 'onnx-int8'")
    recipe = {**INT8_RECIPE, "export": EXPORT_SETTINGS, "onnxruntime": _onnxruntime_version()}
    int8_name = f"int8-{_settings_hash(recipe)}.onnx"

    def quantize(path: Path) -> None:
        quantize_int8(cache.get_or_build(entry, fp32_name, export), path, files.tokenizer())

    return cache.get_or_build(entry, int8_name, quantize)


def export_fp32(files: ModelFiles, path: Path) -> None:
    """Write *files*' transformer to *path* as an fp32 ONNX graph (imports torch)."""
    encoder = files.load_encoder()
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - sentence-transformers needs it
        raise ModelError(f"the onnx runtime needs torch to export the model: {exc}") from exc

    class _Transformer(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    logger.info("exporting %s %s to ONNX (a cache miss)", files.name, files.version)
    model = encoder[0].auto_model.eval()
    sample = encoder.tokenizer(["an example", "a longer example sentence"], padding=True)
    args = tuple(torch.tensor(sample[name]) for name in INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, EXPORT_SETTINGS["output"])}
    try:
        # The tracer's notes on shape-dependent Python branches are about decoder caches
        # and causal masks, which an encoder with a full attention mask never takes.
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Transformer(model),
                args,
                path,
                input_names=list(INPUTS),
                output_names=[EXPORT_SETTINGS["output"]],
                dynamic_axes=axes,
                opset_version=EXPORT_SETTINGS["opset"],
                dynamo=False,
            )
    except Exception as exc:
        raise ModelError(f"cannot export the model to ONNX: {exc}") from exc


def quantize_int8(
    source: Path, path: Path, tokenizer: Any, recipe: dict[str, Any] | None = None
) -> None:
    """Write the int8 version of the fp32 graph *source* to *path*, per *recipe*.

    With ``smoothing``, the graph is first smoothed (:func:`~redline.serve.smoothing.smooth`)
    with input ranges measured by running *source* on the calibration sentences, tokenized by
    *tokenizer*. Then each MatMul with a weight matrix (except those *recipe* ``keep_fp32``
    names) becomes an ONNX Runtime ``MatMulNBits`` with 8-bit weights, one scale per block of
    ``block_size`` rows of each column, and int8 arithmetic (``accuracy_level`` 4: the
    activations are quantized per block too, on the fly).
    """
    recipe = INT8_RECIPE if recipe is None else recipe
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise ModelError(f"the onnx-int8 runtime needs onnx: {exc}") from exc
    try:
        model = onnx.load(str(source))
    except Exception as exc:
        raise ModelError(f"cannot read the ONNX graph {source}: {exc}") from exc
    if recipe.get("smoothing") is not None:
        texts = calibration_texts(int(recipe["calibration_texts"]))
        smooth(model, input_ranges(source, tokenizer, texts), float(recipe["smoothing"]))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    keep = [re.compile(pattern) for pattern in recipe["keep_fp32"]]
    targets = {node.output[0] for group in weight_matmuls(graph).values() for node in group}
    block = int(recipe["block_size"])
    nodes, quantized = [], 0
    for node in graph.node:
        if node.output[0] not in targets or any(pattern.search(node.name) for pattern in keep):
            nodes.append(node)
            continue
        weight = weights[node.input[1]]
        matrix = numpy_helper.to_array(weight).astype(np.float32)
        codes, scales = _block_quantize(matrix, block)
        prefix = f"{weight.name}_int8"
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, f"{prefix}_codes"),
                numpy_helper.from_array(scales, f"{prefix}_scales"),
            ]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{prefix}_codes", f"{prefix}_scales"],
                list(node.output),
                name=f"{node.name}_int8",
                domain="com.microsoft",
                K=matrix.shape[0],
                N=matrix.shape[1],
                bits=8,
                block_size=block,
                accuracy_level=int(recipe["accuracy_level"]),
            )
        )
        quantized += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    logger.info("quantized %d MatMuls of %s to int8", quantized, source.name)
    try:
        onnx.save(model, str(path))
    except Exception as exc:
        raise ModelError(f"cannot write the int8 graph {path}: {exc}") from exc


def _block_quantize(
    matrix: npt.NDArray[np.float32], block: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Symmetric 8-bit codes of a (K, N) weight matrix, one scale per *block* rows per column.

    Returns codes shaped (N, blocks, block) as MatMulNBits reads them (code = round(w / scale)
    + 128, its default zero point) and the scales, column by column.
    """
    rows, columns = matrix.shape
    blocks = -(-rows // block)
    padded = np.zeros((blocks * block, columns), dtype=np.float32)
    padded[:rows] = matrix
    grouped = padded.T.reshape(columns, blocks, block)
    scales = np.abs(grouped).max(axis=2) / 127.0
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(grouped / scales[..., None]), -127, 127) + 128
    return codes.astype(np.uint8), scales.astype(np.float32).reshape(-1)


def _settings_hash(settings: dict[str, Any]) -> str:
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise ModelError(f"the onnx runtimes need onnxruntime: {exc}") from exc
    return str(onnxruntime.__version__)
