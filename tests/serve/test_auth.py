"""API keys (bearer, compare_digest), open /health, protected /metrics, per-client rate limit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from redline.serve.auth import unchecked_client
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app

BODY = {"input": "secret stuff"}


async def test_api_keys_are_required_when_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys="k-one,k-two")
    async with running_app(settings, HashingModel(8)) as (client, _):
        missing = await client.post("/v1/embeddings", json=BODY)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await client.post(
            "/v1/embeddings", json=BODY, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        for key in ("k-one", "k-two"):
            ok = await client.post(
                "/v1/embeddings", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_metrics_can_require_a_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys="mk", metrics_auth=True)
    async with running_app(settings, HashingModel(8)) as (client, _):
        assert (await client.get("/metrics")).status_code == 401
        allowed = await client.get("/metrics", headers={"Authorization": "Bearer mk"})
        assert allowed.status_code == 200


async def test_no_keys_means_open_access(hashing_client: tuple) -> None:  # type: ignore[type-arg]
    client, _ = hashing_client
    assert (await client.post("/v1/embeddings", json=BODY)).status_code == 200


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_rate_limit_answers_429_with_retry_after(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        cache_url = request.getfixturevalue("redis_url") + "?namespace=serve-rl-" + tmp_path.name
    else:
        cache_url = "memory://"
    settings = make_settings(tmp_path, rate_limit="3/min", cache_url=cache_url, api_keys="a,b")
    async with running_app(settings, HashingModel(8)) as (client, state):
        assert state.limiter is not None
        headers_a = {"Authorization": "Bearer a"}
        statuses = [
            (await client.post("/v1/embeddings", json=BODY, headers=headers_a)).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = await client.post("/v1/embeddings", json=BODY, headers=headers_a)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        other = await client.post(
            "/v1/embeddings", json=BODY, headers={"Authorization": "Bearer b"}
        )
        assert other.status_code == 200
    expected = "redis" if backend == "redis" else "local"
    assert expected in repr(state.limiter)


def _request(api_keys: tuple[str, ...], limiter: object, client: tuple[str, int] | None) -> Request:
    settings = SimpleNamespace(api_keys=api_keys)
    state = SimpleNamespace(redline=SimpleNamespace(settings=settings, limiter=limiter))
    return Request({"type": "http", "app": SimpleNamespace(state=state), "client": client})


def test_a_server_that_checks_nothing_names_the_client_without_authorize() -> None:
    request = _request((), None, ("10.0.0.7", 4242))
    assert unchecked_client(request) == "ip:10.0.0.7"
    assert request.scope["state"]["client"] == "ip:10.0.0.7"  # for the access log
    assert unchecked_client(_request((), None, None)) == "ip:unknown"
    assert unchecked_client(_request(("k1",), None, ("10.0.0.7", 1))) is None
    assert unchecked_client(_request((), object(), ("10.0.0.7", 1))) is None
