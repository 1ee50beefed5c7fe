"""The documented request schemas and the server agree body by body: a body the OpenAPI
document calls valid gets 200, one it calls invalid gets a 4xx (in process, over ASGI)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app

EMBEDDINGS: list[dict[str, Any]] = [
    {"input": "hello"},
    {"input": ["a", "b"], "encoding_format": "base64", "dimensions": 4, "user": "u"},
    {"input": "x", "dimensions": 8.0},  # an integer to JSON Schema
    {"input": "x", "dimensions": True},
    {"input": "x", "dimensions": "4"},
    {"input": "x", "dimensions": 9},
    {"input": "x", "dimensions": 0},
    {"input": ""},
    {"input": " \u3000\x1c\t"},  # only what str.strip() strips
    {"input": "\u200b"},  # zero-width space: not whitespace to Python, so not blank
    {"input": ["ok", "  "]},
    {"input": []},
    {"input": ["a"] * 5},
    {"input": "y" * 12},
    {"input": "  abcdefghij  "},  # 14 characters as sent
    {"input": "abcdefghij"},
    {"input": [1, 2]},
    {"input": "x", "model": "hashing"},
    {"input": "x", "model": "gpt-4"},
    {"input": "x", "model": None},
    {"input": "x", "encoding_format": None},
    {"input": "x", "user": "u" * 257},
    {"input": "x", "extra": {"ignored": True}},
    {"model": "hashing"},
]
PREDICT: list[dict[str, Any]] = [
    {"text": "hi", "labels": ["a", "b"]},
    {"text": "hi", "labels": ["a", "a"]},
    {"text": "hi", "labels": []},
    {"text": "hi", "labels": ["a", " "]},
    {"text": "hi", "labels": ["a", "b", "c", "d", "e"]},
    {"text": ["hi", "there"], "labels": ["a"], "model": "hashing"},
    {"text": "", "labels": ["a"]},
    {"labels": ["a"]},
]


async def _check(
    tmp_path: Path, path: str, bodies: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], bool, int]]:
    settings = make_settings(tmp_path, max_inputs=4, max_chars=10)
    async with running_app(settings, HashingModel(8)) as (client, _):
        document = (await client.get("/openapi.json")).json()
        schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        validator = jsonschema_rs.validator_for(schema["schema"])
        results = []
        for body in bodies:
            response = await client.post(path, json=body)
            results.append((body, validator.is_valid(body), response.status_code))
    return results


@pytest.mark.parametrize(
    ("path", "bodies"), [("/v1/embeddings", EMBEDDINGS), ("/v1/predict", PREDICT)]
)
async def test_valid_by_the_document_is_exactly_what_the_server_accepts(
    tmp_path: Path, path: str, bodies: list[dict[str, Any]]
) -> None:
    results = await _check(tmp_path, path, bodies)
    disagreements = [
        (body, valid, status)
        for body, valid, status in results
        if valid != (status == 200) or not (status == 200 or 400 <= status < 500)
    ]
    assert disagreements == []
    assert {valid for _, valid, _ in results} == {True, False}


def test_the_blank_pattern_matches_what_str_strip_strips() -> None:
    from redline.serve.schemas import NON_BLANK, WHITESPACE

    assert set(WHITESPACE) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    pattern = re.compile(NON_BLANK)
    assert pattern.search(" \t\x1c\u3000") is None
    assert pattern.search(" a ") is not None
