"""Workload bodies, the hot set, and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redline.bench.workload import Workload, read_inputs_file
from redline.exceptions import BenchError


def test_embeddings_body_without_model_omits_the_field() -> None:
    body = json.loads(Workload().sampler(seed=1).next_body() or b"")
    assert set(body) == {"input"}


def test_embeddings_body_is_openai_shaped() -> None:
    sampler = Workload(model="m").sampler(seed=1)
    body = json.loads(sampler.next_body() or b"")
    assert set(body) == {"input", "model"}
    assert isinstance(body["input"], str)
    assert body["model"] == "m"
    assert sampler.path == "/v1/embeddings"
    assert sampler.method == "POST"


def test_predict_body_with_several_inputs() -> None:
    sampler = Workload(route="predict", inputs_per_request=3).sampler(seed=1)
    body = json.loads(sampler.next_body() or b"")
    assert len(body["text"]) == 3
    assert body["labels"] == ["positive", "negative"]
    assert sampler.path == "/v1/predict"


def test_repeat_fraction_draws_from_the_hot_set() -> None:
    sampler = Workload(repeat=0.9, hot_set_size=4).sampler(seed=7)
    bodies = [sampler.next_body() for _ in range(2000)]
    assert 0.85 < sampler.hot_requests / 2000 < 0.95
    # 4 hot bodies plus one unique body per fresh request
    assert len(set(bodies)) == 4 + sampler.fresh_requests


def test_zero_repeat_never_repeats_and_two_samplers_differ() -> None:
    first = [Workload().sampler().next_body() for _ in range(50)]
    assert len(set(first)) == 50


def test_custom_template_and_get_without_body() -> None:
    sampler = Workload(
        route="custom", path="/echo", body='{"q": {{input}}, "all": {{inputs}}}'
    ).sampler(seed=1)
    body = json.loads(sampler.next_body() or b"")
    assert body["all"] == [body["q"]]
    get = Workload(route="custom", path="/trivial").sampler()
    assert get.method == "GET"
    assert get.next_body() is None


def test_inputs_file_lines_are_used(tmp_path: Path) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("alpha\n\nbeta\n")
    inputs = read_inputs_file(path)
    assert inputs == ("alpha", "beta")
    sampler = Workload(inputs=inputs, hot_set_size=1).sampler()
    assert json.loads(sampler.next_body() or b"")["input"] in {"alpha", "beta"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeat": 1.5}, "--repeat must be within 0..1, got 1.5"),
        ({"inputs_per_request": 0}, "--inputs-per-request must be >= 1, got 0"),
        ({"route": "nope"}, "--route must be one of embeddings, predict, custom, got 'nope'"),
        ({"route": "custom"}, "--route custom needs --path starting with '/', got None"),
        ({"path": "/x"}, "--path and --body are only allowed with --route custom"),
        ({"route": "custom", "path": "/x", "body": "{bad"}, "--body is not a valid JSON template"),
    ],
)
def test_bad_workloads_raise_bench_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BenchError) as info:
        Workload(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_missing_or_empty_inputs_file(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read inputs file"):
        read_inputs_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(BenchError, match="has no non-empty lines"):
        read_inputs_file(tmp_path / "empty.txt")
