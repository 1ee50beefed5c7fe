"""Equivalence: a gateway in front of a real ``redline serve`` answers exactly what the
upstream alone answers (order, index, vectors to 1e-6, usage, model), cached or not."""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.gateway._procs import Serve, gateway, upstream_server

pytestmark = pytest.mark.slow

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Serve]:
    with upstream_server() as server:
        yield server


@pytest.fixture(scope="module")
def gw(upstream: Serve) -> Iterator[Serve]:
    with gateway(f"up={upstream.url}?max_inputs=5") as server:  # models asked at start
        yield server


def vectors(body: dict[str, Any]) -> np.ndarray:
    rows = []
    for row in body["data"]:
        embedding = row["embedding"]
        if isinstance(embedding, str):
            rows.append(np.frombuffer(base64.b64decode(embedding), dtype="<f4"))
        else:
            rows.append(np.asarray(embedding, dtype=np.float32))
    return np.stack(rows)


def test_models_lists_the_local_and_the_upstream_model(gw: Serve) -> None:
    ids = {row["id"] for row in httpx.get(f"{gw.url}/v1/models", timeout=10).json()["data"]}
    assert {"local", "hashing"} <= ids


def test_an_unknown_model_names_local_and_upstream_models(gw: Serve) -> None:
    response = httpx.post(
        f"{gw.url}/v1/embeddings", json={"model": "nope", "input": "x"}, timeout=10
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "local" in message
    assert "hashing" in message


def test_gateway_answers_equal_the_upstream_alone_fuzz(gw: Serve, upstream: Serve) -> None:
    rng = random.Random(20261201)
    phrases = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + f" {n}" for n in range(40)
    ]
    phrases += ["  padded text  ", "padded text", "caf\u0065\u0301", "caf\u00e9"]
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for round_ in range(60):
            size = rng.randint(1, 12)
            texts = [rng.choice(phrases) for _ in range(size)]
            body: dict[str, Any] = {"model": "hashing"}
            body["input"] = texts[0] if size == 1 and rng.random() < 0.5 else texts
            dims = rng.choice([None, None, 8, 64, 384])
            if dims is not None:
                body["dimensions"] = dims
            body["encoding_format"] = rng.choice(["float", "base64"])
            direct = client.post(f"{upstream.url}/v1/embeddings", json=body)
            via = client.post(f"{gw.url}/v1/embeddings", json=body)
            assert direct.status_code == 200, direct.text
            assert via.status_code == 200, (round_, via.text)
            seen[via.headers["x-cache"]] += 1
            want, got = direct.json(), via.json()
            assert [r["index"] for r in got["data"]] == [r["index"] for r in want["data"]]
            assert [type(r["embedding"]) for r in got["data"]] == [
                type(r["embedding"]) for r in want["data"]
            ]
            np.testing.assert_allclose(vectors(got), vectors(want), atol=1e-6)
            assert got["usage"] == want["usage"], round_
            assert got["model"] == want["model"]
            assert got["object"] == want["object"] == "list"
    assert {"hit", "miss", "partial"} <= set(seen), seen


def test_bad_dimensions_are_a_400_naming_the_field(gw: Serve) -> None:
    response = httpx.post(
        f"{gw.url}/v1/embeddings",
        json={"model": "hashing", "input": "x", "dimensions": 385},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "dimensions"
