"""Per-request ``Cache-Control`` on a gateway process, for an upstream's model (the upstream
counts what it is asked) and for the local model alike."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()


def post(gw: Serve, model: str, text: str, control: str | None = None) -> httpx.Response:
    headers = {"Cache-Control": control} if control else {}
    body = {"model": model, "input": [text, text]}
    return httpx.post(f"{gw.url}/v1/embeddings", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("model", ["fake", "local"])
def test_no_cache_computes_again_and_stores(gw: Serve, fake: FakeUpstream, model: str) -> None:
    text = f"refresh {uuid.uuid4().hex}"
    assert post(gw, model, text).headers["x-cache"] == "miss"
    assert post(gw, model, text).headers["x-cache"] == "hit"
    assert post(gw, model, text, "no-cache").headers["x-cache"] == "refresh"
    assert post(gw, model, text, "only-if-cached").status_code == 200
    if model == "fake":
        assert fake.inputs == [text, text]


@pytest.mark.parametrize("model", ["fake", "local"])
def test_no_store_writes_nothing(gw: Serve, fake: FakeUpstream, model: str) -> None:
    text = f"secret {uuid.uuid4().hex}"
    response = post(gw, model, text, "no-store")
    assert response.status_code == 200
    assert response.headers["x-cache"] == "bypass"
    refused = post(gw, model, text, "only-if-cached")
    assert refused.status_code == 504
    assert refused.json()["error"]["code"] == "not_cached"
    if model == "fake":
        assert fake.inputs == [text]


@pytest.mark.parametrize("model", ["fake", "local"])
def test_max_age_refuses_older_entries_and_reports_age(
    gw: Serve, fake: FakeUpstream, model: str
) -> None:
    text = f"aging {uuid.uuid4().hex}"
    assert post(gw, model, text).status_code == 200
    time.sleep(1.2)
    young = post(gw, model, text, "max-age=60")
    assert young.headers["x-cache"] == "hit"
    assert int(young.headers["age"]) >= 1
    old = post(gw, model, text, "max-age=1")
    assert old.headers["x-cache"] == "miss"
    assert old.headers["age"] == "0"
    if model == "fake":
        assert fake.inputs == [text, text]


def test_only_if_cached_never_calls_the_upstream(gw: Serve, fake: FakeUpstream) -> None:
    response = post(gw, "fake", f"cold {uuid.uuid4().hex}", "only-if-cached")
    assert response.status_code == 504
    assert "only-if-cached" in response.json()["error"]["message"]
    assert fake.requests == 0


def test_a_bad_max_age_is_a_400(gw: Serve) -> None:
    response = post(gw, "local", "x", "max-age=soon")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cache_control"
