"""``redline serve --model none --upstream ...``: a gateway without a local model."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve

pytestmark = pytest.mark.slow


def test_a_gateway_without_a_local_model() -> None:
    with FakeUpstream(dimension=8) as fake:
        spec = f"fake={fake.url}?model=fake&dimension=8&alias=small:fake"
        with Serve("--model", "none", "--upstream", spec) as gw:
            ready = httpx.get(f"{gw.url}/ready", timeout=10)
            assert ready.status_code == 200
            assert ready.json()["checks"]["upstreams"] == {"fake": "healthy"}
            ids = [row["id"] for row in httpx.get(f"{gw.url}/v1/models", timeout=10).json()["data"]]
            assert ids == ["fake"]
            for body in ({"input": "x"}, {"input": "y", "model": "small"}):
                response = httpx.post(f"{gw.url}/v1/embeddings", json=body, timeout=10)
                assert response.status_code == 200, response.text
                assert response.json()["model"] == "fake"
            wrong = httpx.post(
                f"{gw.url}/v1/embeddings", json={"input": "x", "model": "minilm"}, timeout=10
            )
            assert wrong.status_code == 400
            assert "fake" in wrong.json()["error"]["message"]
            fake.stop()
            failed = httpx.post(f"{gw.url}/v1/embeddings", json={"input": "z"}, timeout=40)
            assert failed.status_code in (502, 503, 504)
            down = httpx.get(f"{gw.url}/ready", timeout=10)
            assert down.status_code == 200  # cached inputs are still served
            assert down.json()["checks"]["upstreams"]["fake"] != "healthy"
            cached = httpx.post(f"{gw.url}/v1/embeddings", json={"input": "x"}, timeout=10)
            assert cached.status_code == 200


def test_model_none_without_upstreams_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "redline", "serve", "--model", "none"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "serves nothing without REDLINE_UPSTREAMS" in result.stderr
