"""The OpenAPI document tells the truth: schemathesis (every check, a fixed seed, bounded
examples) against a real ``redline serve`` finds no failure and no 5xx, with and without API
keys; and the document itself says what the server does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve._process import serve_process

SEED = 20261201
MAX_EXAMPLES = 25
# negative_data_rejection's default list of "rejected" statuses lacks 413, which is how this
# server refuses an input over REDLINE_MAX_CHARS (a string over the document's maxLength).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]
"""


def _schemathesis(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
    command += [f"{url}/openapi.json", "--checks", "all", "--seed", str(SEED)]
    command += ["--max-examples", str(MAX_EXAMPLES), "--generation-database", "none"]
    command += ["--request-timeout", "10", "--no-color", *extra]
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """Exit 0: no check failed (not_a_server_error among them: no 5xx), every operation run."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Selected: 7/7" in output, output[-3000:]
    assert "Tested: 7" in output, output[-3000:]
    assert "found 0 unique failures" in output or "No issues found" in output, output[-3000:]


@pytest.mark.slow
def test_schemathesis_finds_nothing_without_keys(tmp_path: Path) -> None:
    with serve_process(tmp_path) as url:
        _assert_clean(_schemathesis(tmp_path, url))


@pytest.mark.slow
def test_schemathesis_finds_nothing_with_keys_and_a_rate_limit(tmp_path: Path) -> None:
    # ignored_auth sends requests without the key: they must get 401, as documented.
    flags = ("--api-keys", "conformance-key", "--rate-limit", "100000/s")
    env = {"REDLINE_AUTH_FAILURE_LIMIT": "100000/min", "REDLINE_METRICS_AUTH": "true"}
    with serve_process(tmp_path, *flags, **env) as url:
        result = _schemathesis(tmp_path, url, "--header", "Authorization: Bearer conformance-key")
    _assert_clean(result)


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("openapi")
    env = {"REDLINE_MAX_INPUTS": "7", "REDLINE_HASHING_DIMENSION": "32"}
    with serve_process(tmp, "--api-keys", "k", **env) as url:
        response = httpx.get(f"{url}/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def _errors(operation: dict[str, Any]) -> set[str]:
    return {status for status in operation["responses"] if status != "200"}


def test_every_error_the_inference_routes_give_is_documented(document: dict[str, Any]) -> None:
    for path in ("/v1/embeddings", "/v1/predict"):
        operation = document["paths"][path]["post"]
        assert _errors(operation) == {"400", "401", "413", "415", "429", "503", "504"}
        for status in _errors(operation):
            content = operation["responses"][status]["content"]
            assert content == {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            }
        assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True
        assert operation["security"] == [{"bearer": []}]
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]


def test_no_operation_documents_a_422_the_server_never_sends(document: dict[str, Any]) -> None:
    for operations in document["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_model_lookup_documents_404_and_metrics_is_prometheus_text(
    document: dict[str, Any],
) -> None:
    model = document["paths"]["/v1/models/{model_id}"]["get"]
    assert _errors(model) == {"401", "404", "429"}
    metrics = document["paths"]["/metrics"]["get"]
    assert list(metrics["responses"]["200"]["content"]) == ["text/plain"]
    assert "security" not in metrics  # REDLINE_METRICS_AUTH is off here


def test_request_schemas_carry_the_server_limits(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    text, many = schema["properties"]["input"]["anyOf"]
    assert text["minLength"] == 1
    assert text["maxLength"] == 8192
    assert many["maxItems"] == 7
    assert many["minItems"] == 1
    assert schema["properties"]["model"]["anyOf"][0]["enum"] == ["hashing"]
    assert schema["properties"]["dimensions"]["anyOf"][0]["maximum"] == 32
    predict = document["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    labels = predict["application/json"]["schema"]["properties"]["labels"]
    assert labels["maxItems"] == 7
    assert labels["uniqueItems"] is True
