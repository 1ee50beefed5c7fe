"""Bad requests get 4xx JSON in the OpenAI error shape, naming the field and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from redline.serve.state import ServerState
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app

Pair = tuple[httpx.AsyncClient, ServerState]


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"input": []}, "input", "must not be an empty list"),
        ({"input": ""}, "input", "'input' is empty"),
        ({"input": ["ok", "   "]}, "input", "'input[1]' is empty"),
        ({"input": [1, 2, 3]}, "input", "cannot take token ids"),
        ({"input": [[1, 2], [3]]}, "input", "cannot take token ids"),
        ({"input": 42}, "input", "must be a string or a list of strings"),
        ({"input": ["a", 7]}, "input", "must be a string or a list of strings"),
        ({"model": "hashing"}, "input", "'input' is required"),
        ({"input": "x", "model": "gpt-4"}, "model", "allowed: ['hashing']"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format", "'float' or 'base64'"),
        ({"input": "x", "dimensions": 0}, "dimensions", "greater than or equal to 1"),
        ({"input": "x", "dimensions": "big"}, "dimensions", "valid integer"),
    ],
)
async def test_bad_embedding_requests_name_the_field(
    hashing_client: Pair, body: dict[str, Any], param: str, fragment: str
) -> None:
    client, _ = hashing_client
    error = _error(await client.post("/v1/embeddings", json=body), 400)
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_too_many_inputs_names_the_limit(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path, max_inputs=3), HashingModel(8)) as (client, _):
        error = _error(await client.post("/v1/embeddings", json={"input": ["a"] * 4}), 400)
    assert error["param"] == "input"
    assert "at most 3" in error["message"]


async def test_too_long_input_is_413_unless_truncating(tmp_path: Path) -> None:
    model = HashingModel(8)
    async with running_app(make_settings(tmp_path, max_chars=10), model) as (client, _):
        error = _error(await client.post("/v1/embeddings", json={"input": "x" * 11}), 413)
        assert error["param"] == "input"
        assert "at most 10" in error["message"]
    async with running_app(make_settings(tmp_path, max_chars=10, truncate=True), model) as (
        client,
        _,
    ):
        response = await client.post("/v1/embeddings", json={"input": "y" * 50})
        assert response.status_code == 200
    assert "y" * 10 in model.inputs


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=1000)
    async with running_app(settings, HashingModel(8)) as (client, _):
        error = _error(await client.post("/v1/embeddings", json={"input": "z" * 2000}), 413)
    assert "larger than 1000 bytes" in error["message"]


async def test_invalid_json_is_a_400(hashing_client: Pair) -> None:
    client, _ = hashing_client
    response = await client.post(
        "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in _error(response, 400)["message"]


async def test_unknown_route_is_a_json_404(hashing_client: Pair) -> None:
    client, _ = hashing_client
    assert "no route GET /v2/nothing" in _error(await client.get("/v2/nothing"), 404)["message"]


async def test_wrong_method_is_a_json_405(hashing_client: Pair) -> None:
    client, _ = hashing_client
    _error(await client.get("/v1/embeddings"), 405)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"text": "x", "labels": []}, "labels", "at least 1 item"),
        ({"text": "x", "labels": ["a", "a"]}, "labels", "distinct"),
        ({"text": "x", "labels": ["a", " "]}, "labels", "non-empty"),
        ({"labels": ["a"]}, "text", "'text' is required"),
        ({"text": [], "labels": ["a"]}, "text", "must not be an empty list"),
    ],
)
async def test_bad_predict_requests_name_the_field(
    hashing_client: Pair, body: dict[str, Any], param: str, fragment: str
) -> None:
    client, _ = hashing_client
    error = _error(await client.post("/v1/predict", json=body), 400)
    assert error["param"] == param
    assert fragment in error["message"]
