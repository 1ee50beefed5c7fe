"""The request middleware is added through FastAPI's public ``add_middleware``, inside
Starlette's error middleware; it answers what nothing inside answered, so a 500 still carries
the request id, the JSON error shape, the metrics and the access log line."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.responses import Response

from redline.serve.app import create_app
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, request_count


def test_the_middleware_stack_is_fastapis_own() -> None:
    app = create_app(make_settings(Path("/nonexistent")), model=HashingModel(8))
    assert type(app).build_middleware_stack is FastAPI.build_middleware_stack
    assert app.user_middleware  # the request middleware, added the public way


async def test_an_unexpected_error_on_a_fastapi_route_is_a_complete_json_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(tmp_path), model=HashingModel(8))

    @app.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("the disk is on fire")

    caplog.set_level(logging.INFO, logger="redline.serve.access")
    async with LifespanManager(app):
        await app.state.redline.wait_ready(timeout=30)
        # raise_app_exceptions: an exception escaping the app fails the test.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom", headers={"x-request-id": "client-42"})
            metrics = (await client.get("/metrics")).text
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal error: RuntimeError",
        "type": "server_error",
        "param": None,
        "code": "internal",
    }
    assert response.headers["x-request-id"] == "client-42"
    assert response.headers["content-type"] == "application/json"
    assert request_count(metrics, "/boom", "500") == 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    [line] = [line for line in lines if line["route"] == "/boom"]
    assert line["status"] == 500
    assert line["client_request_id"] == "client-42"


async def test_a_requests_logged_and_measured_duration_is_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(tmp_path), model=HashingModel(8))
    caplog.set_level(logging.INFO, logger="redline.serve.access")
    async with LifespanManager(app):
        await app.state.redline.wait_ready(timeout=30)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            started = time.perf_counter()
            response = await client.post("/v1/embeddings", json={"input": "a cat"})
            waited_ms = (time.perf_counter() - started) * 1000
            metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("access")]
    [line] = [line for line in lines if line["route"] == "/v1/embeddings"]
    assert 0 < line["duration_ms"] <= waited_ms
    [total] = [
        float(row.rpartition(" ")[2])
        for row in metrics.splitlines()
        if row.startswith("redline_http_request_duration_seconds_sum")
        and 'route="/v1/embeddings"' in row
    ]
    assert 0 < total * 1000 <= waited_ms
