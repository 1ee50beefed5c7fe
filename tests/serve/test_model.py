"""The Model protocol, load_model's errors, and the HashingModel test double."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest

from redline.exceptions import ConfigError, ModelOutputError
from redline.serve.model import Model, load_model, run_batch
from redline.serve.testing import HashingModel, create_hashing_model


@pytest.fixture
def plugin_module() -> Iterator[types.ModuleType]:
    """A throwaway importable module holding factories good and bad."""
    module = types.ModuleType("redline_test_plugin")

    class NoDimension:
        name, version = "x", "1"

        def batch(self, inputs: list[str]) -> list[list[float]]:
            return [[0.0] for _ in inputs]

    module.good = lambda: HashingModel(4)  # type: ignore[attr-defined]
    module.no_dimension = NoDimension  # type: ignore[attr-defined]
    module.not_callable = 42  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_load_model_imports_and_calls_the_factory(plugin_module: types.ModuleType) -> None:
    model = load_model("redline_test_plugin:good")
    assert isinstance(model, Model)
    assert model.dimension == 4


def test_load_model_of_the_testing_factory() -> None:
    model = load_model("redline.serve.testing:create_hashing_model")
    assert isinstance(model, HashingModel)
    assert model.dimension == 384


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nonsense", "model must be one of ['minilm'] or 'package.module:factory'"),
        ("a:b:c", "model must be one of"),
        ("no_such_module_xyz:factory", "cannot import model module 'no_such_module_xyz'"),
        ("redline_test_plugin:missing", "has no callable 'missing'"),
        ("redline_test_plugin:not_callable", "has no callable 'not_callable'"),
        ("redline_test_plugin:no_dimension", "missing ['dimension']"),
    ],
)
def test_load_model_errors_are_config_errors(
    plugin_module: types.ModuleType, spec: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model(spec)
    assert fragment in str(caught.value)


def test_hashing_model_is_deterministic_and_unit_length() -> None:
    model = HashingModel(dimension=16)
    first = model.batch(["alpha", "beta"])
    again = HashingModel(dimension=16).batch(["alpha", "beta"])
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], first[1])
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert model.calls == 1
    assert model.inputs == ["alpha", "beta"]


def test_hashing_model_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="dimension must be >= 1, got 0"):
        HashingModel(0)
    with pytest.raises(ValueError, match="delay must be >= 0, got -1"):
        HashingModel(4, delay=-1)


def test_create_hashing_model_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDLINE_HASHING_DIMENSION", "12")
    monkeypatch.setenv("REDLINE_HASHING_DELAY_MS", "5")
    model = create_hashing_model()
    assert (model.dimension, model.delay) == (12, 0.005)


def test_run_batch_checks_the_output_shape() -> None:
    class Liar(HashingModel):
        def batch(self, inputs: list[str]) -> np.ndarray:
            return np.zeros((len(inputs), 3), dtype=np.float32)

    with pytest.raises(
        ModelOutputError, match=r"returned shape \(2, 3\) for 2 inputs, expected \(2, 4\)"
    ):
        run_batch(Liar(4), ["a", "b"])
