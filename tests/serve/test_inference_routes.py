"""The inference routes are a small ASGI app ahead of FastAPI (``routes.inference``): their
answers, errors included, are what they were when FastAPI routed them, and the OpenAPI
document describes them from the same route records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from fastapi.routing import APIRoute

from redline.serve.app import INFERENCE_ROUTES, create_app
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, request_count, running_app


class BrokenModel(HashingModel):
    """A model that warms up, then fails every batch once ``broken`` is set."""

    broken = False

    def batch(self, inputs: list[str]) -> npt.NDArray[np.float32]:
        if self.broken:
            raise RuntimeError("weights are corrupt")
        return super().batch(inputs)


async def test_a_failing_model_is_a_json_500_counted_on_its_route(tmp_path: Path) -> None:
    model = BrokenModel(8)
    async with running_app(make_settings(tmp_path), model) as (client, _):
        model.broken = True
        response = await client.post("/v1/embeddings", json={"input": "hello"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal"
        assert response.headers["x-request-id"]
        metrics = (await client.get("/metrics")).text
    assert request_count(metrics, "/v1/embeddings", "500") == 1


async def test_a_streamed_body_over_the_limit_is_a_json_413(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"input": "'
        for _ in range(10):
            yield b"z" * 200
        yield b'"}'

    settings = make_settings(tmp_path, max_body_bytes=1000)
    async with running_app(settings, HashingModel(8)) as (client, _):
        response = await client.post(
            "/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    body = response.json()
    assert body["error"]["code"] == "body_too_large"
    assert "larger than 1000 bytes" in body["error"]["message"]


async def test_another_method_is_a_json_405_counted_on_the_route(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, _):
        answers = [await client.request(m, "/v1/predict") for m in ("GET", "PUT", "DELETE")]
        metrics = (await client.get("/metrics")).text
    for response in answers:
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.headers["x-request-id"]
        assert response.json()["error"] == {
            "message": "Method Not Allowed",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    assert request_count(metrics, "/v1/predict", "405", method="other") == 3


async def test_a_trailing_slash_is_redirected_and_other_paths_reach_fastapi(
    tmp_path: Path,
) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, _):
        slash = await client.post("/v1/embeddings/?x=1", json={"input": "a"})
        models = await client.get("/v1/models")
        missing = await client.post("/v1/embeddingz", json={"input": "a"})
    assert slash.status_code == 307
    assert slash.headers["location"] == "http://testserver/v1/embeddings?x=1"
    assert models.status_code == 200
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no route POST /v1/embeddingz"


def test_fastapi_does_not_route_the_inference_paths() -> None:
    app = create_app(make_settings(Path("/nonexistent")), model=HashingModel(8))
    routed = {route.path for route in app.routes if isinstance(route, APIRoute)}
    assert {route.path for route in INFERENCE_ROUTES} == {"/v1/embeddings", "/v1/predict"}
    assert routed.isdisjoint(route.path for route in INFERENCE_ROUTES)


def test_openapi_documents_the_inference_routes_from_their_records(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), model=HashingModel(8))
    document = app.openapi()
    paths = document["paths"]
    assert list(paths)[:2] == ["/v1/embeddings", "/v1/predict"]
    for route in INFERENCE_ROUTES:
        operation = paths[route.path]["post"]
        assert "requestBody" in operation
        success = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert success == {"$ref": f"#/components/schemas/{route.response.__name__}"}
        assert route.response.__name__ in document["components"]["schemas"]
        assert operation["description"] == (route.endpoint.__doc__ or "").strip()
    embeddings = paths["/v1/embeddings"]["post"]
    assert embeddings["operationId"] == "create_embeddings_v1_embeddings_post"
    assert embeddings["summary"] == "Create Embeddings"
    assert {"EmbeddingData", "Usage", "Prediction"} <= set(document["components"]["schemas"])
