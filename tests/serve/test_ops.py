"""/health, /ready (503 while loading and when the batch worker is dead), /metrics, overload."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from redline.serve.metrics import ServerMetrics
from redline.serve.state import ServerState
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app

Pair = tuple[httpx.AsyncClient, ServerState]


async def test_health_is_always_ok(hashing_client: Pair) -> None:
    client, _ = hashing_client
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_every_check_when_warm(hashing_client: Pair) -> None:
    client, _ = hashing_client
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"model": "ok", "batcher": "ok", "cache": "ok", "database": "ok"},
    }


async def test_ready_is_503_until_the_model_is_warm(tmp_path: Path) -> None:
    release = threading.Event()

    class SlowWarmup(HashingModel):
        def warmup(self) -> None:
            release.wait(30)

    async with running_app(make_settings(tmp_path), SlowWarmup(8), wait=False) as (client, state):
        loading = await client.get("/ready")
        assert loading.status_code == 503
        assert loading.json()["checks"]["model"] == "loading"
        assert (await client.get("/health")).status_code == 200
        release.set()
        await state.wait_ready(timeout=30)
        assert (await client.get("/ready")).status_code == 200


async def test_ready_is_503_when_the_batch_worker_is_dead(hashing_client: Pair) -> None:
    client, state = hashing_client
    assert state.engine is not None
    worker = state.engine.batcher._worker
    assert worker is not None
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["batcher"].startswith("dead")


async def test_ready_reports_a_failed_model_load(tmp_path: Path) -> None:
    class Broken(HashingModel):
        def warmup(self) -> None:
            raise RuntimeError("weights corrupted")

    async with running_app(make_settings(tmp_path), Broken(8), wait=False) as (client, state):
        for _ in range(100):
            if state.load_error:
                break
            await asyncio.sleep(0.02)
        response = await client.get("/ready")
    assert response.status_code == 503
    assert "weights corrupted" in response.json()["checks"]["model"]


async def test_metrics_parse_and_hold_the_named_series(hashing_client: Pair) -> None:
    client, _ = hashing_client
    await client.post("/v1/embeddings", json={"input": ["m1", "m2"]})
    await client.post("/v1/embeddings", json={"input": ["m1"]})
    response = await client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "redline_http_requests",
        "redline_http_request_duration_seconds",
        "redline_http_requests_in_flight",
        "redline_cache_requests",
        "redline_batch_size",
        "redline_batch_queue_depth",
        "redline_batch_queue_wait_seconds",
        "redline_inference_duration_seconds",
        "redline_model_load_seconds",
        "redline_write_behind_backlog",
    ):
        assert name in families, name
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["redline_http_requests"].samples
        if s.name == "redline_http_requests_total"
    }
    assert requests[("/v1/embeddings", "200")] == 2
    # The scrape itself is in flight (the level is read when /metrics renders), nothing else.
    [in_flight] = families["redline_http_requests_in_flight"].samples
    assert in_flight.value == 1
    buckets = [
        float(s.labels["le"])
        for s in families["redline_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert min(buckets) < 0.001
    cache = {
        (s.labels["tier"], s.labels["result"]): s.value
        for s in families["redline_cache_requests"].samples
        if s.name == "redline_cache_requests_total"
    }
    assert sum(v for (_, result), v in cache.items() if result == "hit") >= 1
    sizes = [s for s in families["redline_batch_size"].samples if s.name.endswith("_count")]
    assert sizes[0].value >= 1


async def test_overload_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_queue=2, max_batch_size=1, cache_url="none")
    async with running_app(settings, HashingModel(8, delay=0.3)) as (client, _):
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"input": f"o{i}"}) for i in range(8))
        )
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses
    assert 429 in statuses
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.json()["error"]["code"] == "overloaded"


async def test_openapi_documents_the_api(hashing_client: Pair) -> None:
    client, _ = hashing_client
    schema = (await client.get("/openapi.json")).json()
    for path in ("/v1/embeddings", "/v1/predict", "/v1/models", "/health", "/ready", "/metrics"):
        assert path in schema["paths"], path
    body = schema["paths"]["/v1/embeddings"]["post"]["requestBody"]
    request = body["content"]["application/json"]["schema"]
    assert request["title"] == "EmbeddingRequest"
    assert set(request["properties"]) >= {"input", "model", "encoding_format", "dimensions"}
    assert (await client.get("/docs")).status_code == 200


async def test_ready_is_503_while_the_queue_is_nearly_full(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, max_queue=10, max_batch_size=1, ready_queue_ratio=0.5, cache_url="none"
    )
    async with running_app(settings, HashingModel(8, delay=0.2)) as (client, state):
        pending = [
            asyncio.create_task(client.post("/v1/embeddings", json={"input": f"q{i}"}))
            for i in range(8)
        ]
        assert state.engine is not None
        for _ in range(100):
            if state.engine.health()["queue_depth"] >= 5:
                break
            await asyncio.sleep(0.01)
        busy = await client.get("/ready")
        assert busy.status_code == 503
        assert busy.json()["checks"]["batcher"].startswith("saturated")
        assert all(r.status_code == 200 for r in await asyncio.gather(*pending))
        assert (await client.get("/ready")).status_code == 200


def test_in_flight_is_a_gauge_with_several_workers(tmp_path: Path, monkeypatch: Any) -> None:
    # A plain count would not reach the other workers' /metrics: multiprocess keeps the Gauge.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = ServerMetrics()
    assert isinstance(metrics.in_flight, Gauge)
    # (prometheus_client picked its in-memory values at import: the gauge reads back here)
    metrics.in_flight.inc()
    assert metrics.registry.get_sample_value("redline_http_requests_in_flight") == 1.0


def test_in_flight_level_is_read_at_each_scrape() -> None:
    metrics = ServerMetrics()
    metrics.in_flight.inc()
    metrics.in_flight.inc()
    metrics.in_flight.dec()
    assert metrics.registry.get_sample_value("redline_http_requests_in_flight") == 1.0
    metrics.in_flight.dec()
    body, _ = metrics.render()
    assert b"redline_http_requests_in_flight 0.0" in body
