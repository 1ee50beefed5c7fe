"""Abuse resistance: non-JSON bodies get 415, failed API keys are throttled per address (in
process and shared through Redis), and clients cannot grow the metrics' method label."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from redline.serve.app import create_app
from redline.serve.settings import Settings
from redline.serve.state import ServerState
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings

BODY = {"input": "hello"}


@asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings, model=HashingModel(8))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        state: ServerState = app.state.redline
        await state.wait_ready(timeout=60)
        yield app


def _client(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client that the app sees as coming from *address*."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


# --- 415 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",  # what a browser's cross-origin "simple" POST sends
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/predict"])
async def test_bodies_not_declared_json_get_415(
    hashing_client: tuple[httpx.AsyncClient, ServerState], path: str, content_type: str | None
) -> None:
    client, _ = hashing_client
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = b'{"input": "hello", "text": "hi", "labels": ["a", "b"]}'
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_with_parameters_or_any_case_is_accepted(
    hashing_client: tuple[httpx.AsyncClient, ServerState], content_type: str
) -> None:
    client, _ = hashing_client
    response = await client.post(
        "/v1/embeddings", content=b'{"input": "hello"}', headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text


# --- failed authentication ------------------------------------------------------------------


async def test_a_wrong_key_burst_is_throttled_and_valid_keys_elsewhere_are_not(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, api_keys="right", rate_limit="1000/min", auth_failure_limit="10/min"
    )
    async with (
        _app(settings) as app,
        _client(app, "203.0.113.7") as attacker,
        _client(app, "198.51.100.1") as user,
    ):
        statuses: Counter[int] = Counter()
        for attempt in range(300):
            headers = {"Authorization": f"Bearer guess-{attempt}"}
            response = await attacker.post("/v1/embeddings", json=BODY, headers=headers)
            statuses[response.status_code] += 1
        # The budget of failures, then 429 (well before the 1000/min valid keys get).
        assert statuses == {401: 10, 429: 290}
        throttled = await attacker.post("/v1/embeddings", json=BODY)  # no key: refused too
        assert throttled.status_code == 429
        assert throttled.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(throttled.headers["retry-after"]) <= 7  # one failure back: 6 s
        # While blocked, the address gets 429 whatever key it sends (no guessing oracle);
        # another address with the right key is served.
        right = {"Authorization": "Bearer right"}
        assert (await attacker.post("/v1/embeddings", json=BODY, headers=right)).status_code == 429
        assert (await attacker.get("/v1/models", headers=right)).status_code == 429
        assert (await user.post("/v1/embeddings", json=BODY, headers=right)).status_code == 200
        assert "1 blocked" in repr(app.state.auth_failures)


async def test_valid_keys_are_never_counted_as_failures(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys="right", auth_failure_limit="3/min")
    async with _app(settings) as app, _client(app, "192.0.2.10") as client:
        right = {"Authorization": "Bearer right"}
        for _ in range(50):
            assert (
                await client.post("/v1/embeddings", json=BODY, headers=right)
            ).status_code == 200
        wrong = {"Authorization": "Bearer wrong"}
        statuses = [
            (await client.post("/v1/embeddings", json=BODY, headers=wrong)).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]


async def test_metrics_behind_a_key_are_throttled_too(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_keys="right", metrics_auth=True, auth_failure_limit="2/min"
    )
    async with _app(settings) as app, _client(app, "192.0.2.20") as client:
        wrong = {"Authorization": "Bearer wrong"}
        statuses = [(await client.get("/metrics", headers=wrong)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


async def test_requests_without_a_key_are_refused_but_not_counted(tmp_path: Path) -> None:
    """A scraper or health checker without a key cannot lock its address out."""
    settings = make_settings(
        tmp_path, api_keys="right", metrics_auth=True, auth_failure_limit="2/min"
    )
    async with _app(settings) as app, _client(app, "192.0.2.25") as client:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
            for _ in range(5):
                response = await client.get("/metrics", headers=headers)
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "missing_api_key"
        right = {"Authorization": "Bearer right"}
        assert (await client.get("/metrics", headers=right)).status_code == 200


async def test_the_failure_limit_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys="right", auth_failure_limit="off")
    async with _app(settings) as app, _client(app, "192.0.2.30") as client:
        assert app.state.auth_failures is None
        wrong = {"Authorization": "Bearer wrong"}
        for _ in range(30):
            response = await client.post("/v1/embeddings", json=BODY, headers=wrong)
            assert response.status_code == 401


async def test_workers_sharing_redis_share_one_failure_budget(
    tmp_path: Path, redis_url: str
) -> None:
    """Two apps (as two workers or replicas) with one Redis: the budget is counted once."""
    cache_url = f"{redis_url}?namespace=authfail-{tmp_path.name}"
    settings = make_settings(
        tmp_path, api_keys="right", cache_url=cache_url, auth_failure_limit="6/min"
    )
    address = "198.18.0.1"
    async with (
        _app(settings) as one,
        _app(settings) as two,
        _client(one, address) as via_one,
        _client(two, address) as via_two,
    ):
        assert "redis" in repr(one.state.auth_failures)
        statuses: Counter[int] = Counter()
        for attempt in range(40):
            client = via_one if attempt % 2 else via_two
            headers = {"Authorization": f"Bearer guess-{attempt}"}
            response = await client.post("/v1/embeddings", json=BODY, headers=headers)
            statuses[response.status_code] += 1
        assert statuses == {401: 6, 429: 34}


async def test_the_limiter_unblocks_when_a_failure_is_back() -> None:
    from redline.serve.auth_failures import AuthFailureLimiter

    now = [0.0]
    failures = AuthFailureLimiter(2, per=10, timer=lambda: now[0])
    await failures.record_failure("a")
    await failures.record_failure("a")
    with pytest.raises(Exception, match="too many failed API-key attempts") as refused:
        await failures.record_failure("a")
    assert refused.value.headers == {"Retry-After": "5"}  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="retry in 5s"):
        failures.check("a")
    failures.check("b")  # other addresses are not affected
    now[0] = 5.0
    failures.check("a")  # one failure is back: the address may try again
    await failures.record_failure("a")
    with pytest.raises(Exception, match="too many failed"):
        await failures.record_failure("a")


# --- metrics labels -------------------------------------------------------------------------


async def test_the_method_label_takes_only_methods_a_route_serves(
    hashing_client: tuple[httpx.AsyncClient, ServerState],
) -> None:
    client, _ = hashing_client
    custom = [f"X-METHOD-{n}" for n in range(25)] + ["PROPFIND", "PURGE", "MKCOL", "DELETE"]
    for method in custom:
        for path in ("/v1/embeddings", "/health", "/no/such/route"):
            response = await client.request(method, path)
            assert response.status_code in (404, 405)
    assert (await client.post("/v1/embeddings", json=BODY)).status_code == 200
    assert (await client.get("/no/such/route")).status_code == 404
    text = (await client.get("/metrics")).text
    labels = set(re.findall(r'^redline_http_requests_total\{[^}]*method="([^"]+)"', text, re.M))
    assert labels == {"GET", "POST", "DELETE", "other"}
    # DELETE is a standard method: labelled as such only where no route matched.
    unmatched = re.findall(
        r'^redline_http_requests_total\{method="DELETE",route="([^"]+)"', text, re.M
    )
    assert unmatched == ["unmatched"]


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--header-timeout", "0"], "REDLINE_HEADER_TIMEOUT=0.0"),
        (["--body-timeout", "-1"], "REDLINE_BODY_TIMEOUT=-1.0"),
        (["--auth-failure-limit", "lots"], "REDLINE_AUTH_FAILURE_LIMIT='lots'"),
    ],
)
def test_bad_abuse_settings_stop_the_server_with_one_line(flags: list[str], named: str) -> None:
    from typer.testing import CliRunner

    from redline.cli import build_app

    result = CliRunner().invoke(build_app(), ["serve", *flags])
    assert result.exit_code == 2
    assert named in result.output
    assert "Traceback" not in result.output


def test_abuse_settings_defaults_and_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from redline.serve.settings import load_settings

    for name in ("REDLINE_HEADER_TIMEOUT", "REDLINE_BODY_TIMEOUT", "REDLINE_AUTH_FAILURE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.header_timeout, settings.body_timeout) == (10.0, 30.0)
    assert settings.auth_failure_limit == "10/min"
    monkeypatch.setenv("REDLINE_AUTH_FAILURE_LIMIT", "off")
    assert load_settings().auth_failure_limit is None
