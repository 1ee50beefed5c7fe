"""A request never waits for the model past REDLINE_REQUEST_TIMEOUT: it gets a JSON 504."""

from __future__ import annotations

import time
from pathlib import Path

from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app


async def test_a_model_slower_than_the_request_timeout_gets_a_json_504(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, request_timeout=0.3, cache_url="none")
    async with running_app(settings, HashingModel(8, delay=2.0)) as (client, _):
        started = time.perf_counter()
        response = await client.post("/v1/embeddings", json={"input": "slow"})
        elapsed = time.perf_counter() - started
    assert response.status_code == 504
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "timeout"
    assert error["type"] == "timeout"
    assert "REDLINE_REQUEST_TIMEOUT" in error["message"]
    assert elapsed < 1.5


async def test_request_timeout_is_a_documented_error_of_the_inference_routes(
    tmp_path: Path,
) -> None:
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, _):
        document = (await client.get("/openapi.json")).json()
    for path in ("/v1/embeddings", "/v1/predict"):
        assert "504" in document["paths"][path]["post"]["responses"]
