"""The model seam: the :class:`Model` protocol (batch of texts in, batch of vectors out) and
:func:`load_model`, which turns ``"minilm"`` or ``"package.module:factory"`` into a model.

A model is any object with ``name``, ``version``, ``dimension`` and a *synchronous*
``batch(inputs)``; the server runs it in the micro-batcher's worker thread. Optional extras:
``count_tokens(texts) -> list[int]`` (usage accounting), ``warmup()`` (run before /ready
turns green) and ``max_input_tokens``.

Example::

    class Upper:
        name, version, dimension = "upper", "1", 2

        def batch(self, inputs: list[str]) -> list[list[float]]:
            return [[float(len(t)), float(sum(c.isupper() for c in t))] for t in inputs]

    def create_upper() -> Upper:
        return Upper()

    # redline serve --model mypackage.models:create_upper
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from redline.exceptions import ConfigError, ModelOutputError

__all__ = ["BUILTIN_MODELS", "Model", "count_tokens", "load_model", "run_batch"]

BUILTIN_MODELS = {"minilm": "redline.serve.minilm:create_minilm_model"}


@runtime_checkable
class Model(Protocol):
    """An embedding model: ``batch(list of texts) -> one vector of `dimension` floats each``."""

    name: str
    version: str
    dimension: int

    def batch(self, inputs: list[str]) -> Sequence[Sequence[float]] | npt.NDArray[Any]: ...


def load_model(
    spec: str,
    *,
    torch_threads: int | None = None,
    workers: int | None = None,
    runtime: str = "onnx",
    cache_dir: Path | None = None,
) -> Model:
    """Import ``package.module:factory`` (or a built-in name), call it, check the result.

    A plug-in factory is called with no arguments; the built-in one gets *torch_threads*,
    *workers*, *runtime* and *cache_dir* (where its ONNX graphs are kept). Raises
    :class:`ConfigError` on a malformed spec, an import error, a missing factory, or an object
    that does not satisfy :class:`Model`.
    """
    target = BUILTIN_MODELS.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ConfigError(
            f"model must be one of {sorted(BUILTIN_MODELS)} or 'package.module:factory', "
            f"got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import model module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"module {module_name!r} has no callable {attr!r}")
    if spec in BUILTIN_MODELS:
        model = factory(
            torch_threads=torch_threads, workers=workers, runtime=runtime, cache_dir=cache_dir
        )
    else:
        model = factory()
    _check_model(model, spec)
    return model  # type: ignore[no-any-return]


def _check_model(model: object, spec: str) -> None:
    """Raise ConfigError unless *model* has the protocol's attributes with sane values."""
    missing = [a for a in ("name", "version", "dimension", "batch") if not hasattr(model, a)]
    if missing:
        raise ConfigError(f"{spec!r} returned {type(model).__name__}, missing {missing}")
    if not callable(getattr(model, "batch", None)):
        raise ConfigError(f"{spec!r} returned a model whose 'batch' is not callable")
    dimension = getattr(model, "dimension", None)
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
        raise ConfigError(f"{spec!r} returned a model with dimension={dimension!r}; need int >= 1")
    for attr in ("name", "version"):
        if not isinstance(getattr(model, attr), str) or not getattr(model, attr):
            raise ConfigError(f"{spec!r} returned a model whose {attr!r} is not a non-empty str")


def run_batch(model: Model, inputs: list[str]) -> npt.NDArray[np.float32]:
    """Call ``model.batch`` and return a ``(len(inputs), dimension)`` float32 array (checked)."""
    array = np.asarray(model.batch(inputs), dtype=np.float32)
    if array.shape != (len(inputs), model.dimension):
        raise ModelOutputError(
            f"model {model.name!r} returned shape {array.shape} for {len(inputs)} inputs, "
            f"expected ({len(inputs)}, {model.dimension})"
        )
    return array


def count_tokens(model: Model, texts: list[str]) -> list[int]:
    """The model's token counts, or a whitespace word count when it has no ``count_tokens``;
    a token-id input counts one per id."""
    from redline.serve.token_input import id_count, is_ids

    if any(is_ids(text) for text in texts):
        plain = [text for text in texts if not is_ids(text)]
        counted = iter(count_tokens(model, plain) if plain else [])
        return [id_count(text) if is_ids(text) else next(counted) for text in texts]
    counter = getattr(model, "count_tokens", None)
    if counter is not None:
        return [int(n) for n in counter(texts)]
    return [max(1, len(text.split())) for text in texts]
