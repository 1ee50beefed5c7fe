"""The hot routes are dispatched directly; errors still come back as the app's JSON errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fastapi import APIRouter, Depends
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.app import HOT_PATHS, create_app
from redline.serve.direct import DirectRoutes
from redline.serve.routes import embeddings, predict
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app


class BrokenModel(HashingModel):
    """A model that warms up, then fails every batch once ``broken`` is set."""

    broken = False

    def batch(self, inputs: list[str]) -> npt.NDArray[np.float32]:
        if self.broken:
            raise RuntimeError("weights are corrupt")
        return super().batch(inputs)


def _request_count(text: str, route: str, status: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "redline_http_requests_total"
                and labels.get("route") == route
                and labels.get("status") == status
            ):
                return sample.value
    return 0.0


async def test_a_failing_model_is_a_json_500_counted_on_its_route(tmp_path: Path) -> None:
    model = BrokenModel(8)
    async with running_app(make_settings(tmp_path), model) as (client, _):
        model.broken = True
        response = await client.post("/v1/embeddings", json={"input": "hello"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal"
        assert response.headers["x-request-id"]
        metrics = (await client.get("/metrics")).text
    assert _request_count(metrics, "/v1/embeddings", "500") == 1


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


def test_hot_routes_are_the_inference_routes() -> None:
    direct = DirectRoutes.from_routers((embeddings.router, predict.router), HOT_PATHS)
    assert ("POST", "/v1/embeddings") in direct
    assert ("POST", "/v1/predict") in direct
    assert ("GET", "/v1/embeddings") not in direct


def test_a_missing_path_is_refused() -> None:
    with pytest.raises(LookupError, match="/v1/nothing"):
        DirectRoutes.from_routers((embeddings.router,), ["/v1/embeddings", "/v1/nothing"])


def test_a_route_with_dependencies_is_refused() -> None:
    router = APIRouter()

    async def client_name(request: Request) -> str:
        return "x"

    @router.post("/with-dependency")
    async def endpoint(name: str = Depends(client_name)) -> Response:
        return Response(name)

    with pytest.raises(TypeError, match="dependencies"):
        DirectRoutes.from_routers((router,), ["/with-dependency"])


async def test_openapi_still_documents_the_hot_routes(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), model=HashingModel(8))
    paths = app.openapi()["paths"]
    for path in HOT_PATHS:
        assert "requestBody" in paths[path]["post"]
