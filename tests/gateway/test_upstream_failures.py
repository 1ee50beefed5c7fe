"""The gateway against a scriptable upstream (a real HTTP server in this process) and a real
gateway process: retries, Retry-After, dropped connections, 4xx pass-through, deadlines,
splitting of long lists, batching of single-input requests, coalescing of identical inputs."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import numpy as np
import pytest

from redline.serve.testing import HashingModel
from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve

pytestmark = pytest.mark.slow

MAX_INPUTS = 4
TIMEOUT = 3.0


@pytest.fixture(scope="module")
def fake_dimension() -> int:
    return 16


@pytest.fixture(scope="module")
def fake_options() -> str:
    return f"&timeout={TIMEOUT}&max_inputs={MAX_INPUTS}"


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def embed(gw: Serve, inputs: str | list[str], **extra: object) -> httpx.Response:
    body = {"model": "fake", "input": inputs, **extra}
    return httpx.post(f"{gw.url}/v1/embeddings", json=body, timeout=30)


def test_a_500_is_retried_and_the_client_sees_200(gw: Serve, fake: FakeUpstream) -> None:
    fake.script.append("500")
    text = unique("five hundred")
    response = embed(gw, text)
    assert response.status_code == 200, response.text
    assert fake.embedding_calls == [[text], [text]]


def test_a_429_is_retried_after_its_retry_after(gw: Serve, fake: FakeUpstream) -> None:
    fake.script.append("429:1")
    started = time.monotonic()
    response = embed(gw, unique("busy"))
    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 0.95
    assert len(fake.embedding_calls) == 2


def test_a_dropped_connection_is_retried(gw: Serve, fake: FakeUpstream) -> None:
    fake.script.append("close")
    text = unique("dropped")
    response = embed(gw, text)
    assert response.status_code == 200, response.text
    assert fake.embedding_calls == [[text], [text]]


def test_an_upstream_4xx_is_passed_on_without_retry(gw: Serve, fake: FakeUpstream) -> None:
    fake.script.append("400")
    response = embed(gw, unique("refused"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "bad dimensions" in error["message"]
    assert error["code"] == "upstream_rejected"
    assert len(fake.embedding_calls) == 1


def test_a_hanging_upstream_is_a_504_json_within_the_deadline(
    gw: Serve, fake: FakeUpstream
) -> None:
    fake.mode = "hang"
    started = time.monotonic()
    response = embed(gw, unique("hang"))
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert "fake" in error["message"]
    assert elapsed < TIMEOUT + 2.0


def test_a_long_list_is_split_within_max_inputs_and_kept_in_order(
    gw: Serve, fake: FakeUpstream
) -> None:
    texts = [unique(f"item {i}") for i in range(10)]
    texts[7] = texts[2]  # a duplicate inside the list
    response = embed(gw, texts)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row["index"] for row in data] == list(range(10))
    expected = HashingModel(16).batch(texts)
    np.testing.assert_allclose(np.array([row["embedding"] for row in data]), expected, atol=1e-6)
    assert all(len(call) <= MAX_INPUTS for call in fake.embedding_calls)
    assert sorted(fake.inputs) == sorted(set(texts))  # each distinct input sent once
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == sum(len(t.split()) for t in texts)


async def test_100_concurrent_requests_for_one_input_send_it_upstream_once(
    gw: Serve, fake: FakeUpstream
) -> None:
    fake.mode = "slow:0.5"
    text = unique("popular")
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/embeddings", json={"model": "fake", "input": text})
                for _ in range(100)
            )
        )
    assert [r.status_code for r in responses] == [200] * 100
    vectors = {tuple(r.json()["data"][0]["embedding"]) for r in responses}
    assert len(vectors) == 1
    assert fake.inputs == [text]


async def test_concurrent_single_input_requests_are_batched(gw: Serve, fake: FakeUpstream) -> None:
    fake.mode = "slow:0.3"
    texts = [unique(f"single {i}") for i in range(40)]
    limits = httpx.Limits(max_connections=40)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": "fake", "input": t}) for t in texts)
        )
    assert [r.status_code for r in responses] == [200] * 40
    for text, response in zip(texts, responses, strict=True):
        got = np.array(response.json()["data"][0]["embedding"])
        np.testing.assert_allclose(got, HashingModel(16).batch([text])[0], atol=1e-6)
    assert sorted(fake.inputs) == sorted(texts)
    assert all(len(call) <= MAX_INPUTS for call in fake.embedding_calls)
    assert len(fake.embedding_calls) < 40
