"""The ONNX model folders infinity-emb's optimum engine serves, made from the same weights.

``fp32/model.onnx`` is the package's transformer exported by torch (inputs ``input_ids``,
``attention_mask``, ``token_type_ids``; output ``last_hidden_state``, as optimum's exporter
writes them); ``int8/model_quantized.onnx`` is that graph through ONNX Runtime's dynamic
quantization (QInt8 weights), the file infinity prefers on CPU. Each folder also gets the
model's config and tokenizer files. Made in this process (redline's venv has torch and onnx):
optimum 1.x's own exporter does not import under torch 2.13.

Example::

    folders = make_model_folders(encoder, model_dir, Path("/tmp/servebench-infinity-models"))
    folders["int8"] / "model_quantized.onnx"
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def make_model_folders(encoder: Any, model_dir: Path, folder: Path) -> dict[str, Path]:
    """``{"fp32": ..., "int8": ...}`` under *folder*, each made once and kept."""
    fp32, int8 = folder / "fp32", folder / "int8"
    for target in (fp32, int8):
        target.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            if (model_dir / name).exists() and not (target / name).exists():
                shutil.copyfile(model_dir / name, target / name)
    if not (fp32 / "model.onnx").exists():
        _export(encoder, fp32 / "model.onnx.partial")
        (fp32 / "model.onnx.partial").rename(fp32 / "model.onnx")
    if not (int8 / "model_quantized.onnx").exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        partial = int8 / "model_quantized.onnx.partial"
        quantize_dynamic(fp32 / "model.onnx", partial, weight_type=QuantType.QInt8)
        partial.rename(int8 / "model_quantized.onnx")
    return {"fp32": fp32, "int8": int8}


def _export(encoder: Any, path: Path) -> None:
    import torch

    class Transformer(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = encoder.tokenizer(["an example", "a longer example sentence"], padding=True)
    args = tuple(torch.tensor(sample[name]) for name in _INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer notes about branches an encoder never takes
        torch.onnx.export(
            Transformer(encoder[0].auto_model.eval()),
            args,
            str(path),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
