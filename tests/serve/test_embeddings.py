"""/v1/embeddings over ASGI with the HashingModel: shapes, encodings, caching, headers."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from redline.serve.state import ServerState
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app

Pair = tuple[httpx.AsyncClient, ServerState]


async def test_float_embeddings_match_the_model_and_have_openai_shape(
    hashing_client: Pair, hashing_model: HashingModel
) -> None:
    client, _ = hashing_client
    response = await client.post("/v1/embeddings", json={"input": ["a cat", "a dog"]})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "hashing"
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert all(item["object"] == "embedding" for item in body["data"])
    expected = hashing_model.batch(["a cat", "a dog"])
    got = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


async def test_single_string_input_gives_one_embedding(hashing_client: Pair) -> None:
    client, _ = hashing_client
    body = (await client.post("/v1/embeddings", json={"input": "solo"})).json()
    assert len(body["data"]) == 1
    assert len(body["data"][0]["embedding"]) == 32


async def test_base64_is_little_endian_float32_of_the_float_answer(hashing_client: Pair) -> None:
    client, _ = hashing_client
    texts = ["one", "two"]
    floats = (await client.post("/v1/embeddings", json={"input": texts})).json()
    packed = (
        await client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
    ).json()
    for f_item, b_item in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b_item["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.array(f_item["embedding"], dtype=np.float32))


async def test_dimensions_truncates_and_renormalises(
    hashing_client: Pair, hashing_model: HashingModel
) -> None:
    client, _ = hashing_client
    body = (await client.post("/v1/embeddings", json={"input": "x", "dimensions": 8})).json()
    vector = np.array(body["data"][0]["embedding"])
    assert vector.shape == (8,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5
    full = hashing_model.batch(["x"])[0][:8]
    np.testing.assert_allclose(vector, full / np.linalg.norm(full), rtol=1e-5)


async def test_dimensions_above_the_model_dimension_is_a_400(hashing_client: Pair) -> None:
    client, _ = hashing_client
    response = await client.post("/v1/embeddings", json={"input": "x", "dimensions": 33})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "dimensions"
    assert "between 1 and 32" in error["message"]


async def test_partial_hit_computes_only_the_missing_inputs(
    hashing_client: Pair, hashing_model: HashingModel
) -> None:
    client, _ = hashing_client
    first = await client.post("/v1/embeddings", json={"input": ["p1", "p2"]})
    assert first.headers["x-cache"] == "miss"
    hashing_model.inputs.clear()
    second = await client.post("/v1/embeddings", json={"input": ["p1", "p3", "p2", "p4"]})
    assert second.headers["x-cache"] == "partial"
    assert sorted(hashing_model.inputs) == ["p3", "p4"]
    hashing_model.inputs.clear()
    third = await client.post("/v1/embeddings", json={"input": ["p4", "p3"]})
    assert third.headers["x-cache"] == "hit"
    assert hashing_model.inputs == []
    expected = hashing_model.batch(["p1", "p3", "p2", "p4"])
    got = np.array([item["embedding"] for item in second.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


async def test_answers_served_wholly_from_the_cache_equal_the_model(
    hashing_client: Pair, hashing_model: HashingModel
) -> None:
    # All-hit answers are built from the cached vectors alone (one input: a view of the entry):
    # one input or several, repeated inputs, truncated dimensions, both encodings.
    client, _ = hashing_client
    requests: list[dict[str, Any]] = [
        {"input": "h1"},
        {"input": ["h2", "h1", "h2"]},
        {"input": "h3", "dimensions": 8},
        {"input": ["h1", "h3"], "encoding_format": "base64"},
    ]
    for request in requests:
        given = request["input"]
        texts: list[str] = [given] if isinstance(given, str) else given
        expected = hashing_model.batch(texts)
        if "dimensions" in request:
            expected = expected[:, :8] / np.linalg.norm(expected[:, :8], axis=1, keepdims=True)
        await client.post("/v1/embeddings", json=request)
        hashing_model.inputs.clear()
        for _ in range(2):  # the entry stays as it was after serving it
            response = await client.post("/v1/embeddings", json=request)
            assert response.headers["x-cache"] == "hit", request
            assert hashing_model.inputs == []
            data = response.json()["data"]
            if request.get("encoding_format") == "base64":
                got = np.array(
                    [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
                )
            else:
                got = np.array([d["embedding"] for d in data], dtype=np.float32)
            np.testing.assert_allclose(got, expected, rtol=1e-5)


async def test_inputs_are_normalised_before_caching(
    hashing_client: Pair, hashing_model: HashingModel
) -> None:
    client, _ = hashing_client
    await client.post("/v1/embeddings", json={"input": "caf\u00e9"})
    hashing_model.inputs.clear()
    response = await client.post("/v1/embeddings", json={"input": "  cafe\u0301 \n"})
    assert response.headers["x-cache"] == "hit"
    assert hashing_model.inputs == []


async def test_duplicate_inputs_in_one_request_are_computed_once(
    hashing_client: Pair, hashing_model: HashingModel
) -> None:
    client, _ = hashing_client
    body = (await client.post("/v1/embeddings", json={"input": ["d", "d", "d"]})).json()
    assert hashing_model.inputs.count("d") == 1
    assert body["data"][0]["embedding"] == body["data"][2]["embedding"]


async def test_server_timing_and_request_id_headers(hashing_client: Pair) -> None:
    client, _ = hashing_client
    response = await client.post(
        "/v1/embeddings", json={"input": "t"}, headers={"X-Request-ID": "abc-123"}
    )
    timing = response.headers["server-timing"]
    stages = dict(re.findall(r"(\w+);dur=([0-9.]+)", timing))
    assert set(stages) == {"cache", "queue", "inference", "total"}
    assert float(stages["total"]) >= float(stages["inference"])
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.post("/v1/embeddings", json={"input": "t"})
    first = generated.headers["x-request-id"]
    second = (await client.post("/v1/embeddings", json={"input": "t"})).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", first)
    assert first != second


async def test_cache_off_reports_x_cache_off_and_always_computes(tmp_path: Path) -> None:
    model = HashingModel(dimension=8)
    async with running_app(make_settings(tmp_path, cache_url="none"), model) as (client, state):
        assert state.cache is None
        for _ in range(2):
            response = await client.post("/v1/embeddings", json={"input": "same"})
            assert response.headers["x-cache"] == "off"
    assert model.inputs.count("same") == 2


async def test_requests_before_the_model_is_ready_get_503(tmp_path: Path) -> None:
    import threading

    release = threading.Event()

    class SlowWarmup(HashingModel):
        def warmup(self) -> None:
            release.wait(30)

    async with running_app(make_settings(tmp_path), SlowWarmup(8), wait=False) as (client, state):
        response = await client.post("/v1/embeddings", json={"input": "early"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"
        release.set()
        await state.wait_ready(timeout=30)
        assert (await client.post("/v1/embeddings", json={"input": "late"})).status_code == 200
