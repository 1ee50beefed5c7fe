"""OpenAI's token-id input forms through a gateway process: passed to the upstream as ids,
cached, coalesced and batched apart from text inputs; a local model that cannot decode ids
says so."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import numpy as np
import pytest

from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake_options() -> str:
    return "&max_inputs=4"


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": "fake", **body}, timeout=30)


def test_token_id_forms_equal_the_upstream_alone(gw: Serve, fake: FakeUpstream) -> None:
    rng = random.Random(7)
    for _ in range(12):
        lists = [[rng.randint(0, 50) for _ in range(rng.randint(1, 4))] for _ in range(5)]
        body: dict[str, Any] = {"input": [rng.choice(lists) for _ in range(rng.randint(1, 8))]}
        if rng.random() < 0.3:
            body = {"input": lists[0]}  # one input given as a flat list of ids
        body["encoding_format"] = rng.choice(["float", "base64"])
        direct, via = post(fake.url, body), post(gw.url, body)
        assert via.status_code == 200, via.text
        want, got = direct.json(), via.json()
        assert got["usage"] == want["usage"]
        assert [r["index"] for r in got["data"]] == [r["index"] for r in want["data"]]
        if body["encoding_format"] == "float":
            np.testing.assert_allclose(
                [r["embedding"] for r in got["data"]],
                [r["embedding"] for r in want["data"]],
                atol=1e-6,
            )
        else:
            assert [r["embedding"] for r in got["data"]] == [r["embedding"] for r in want["data"]]


def test_ids_are_sent_once_as_ids(gw: Serve, fake: FakeUpstream) -> None:
    response = post(gw.url, {"input": [[901, 902], [903], [901, 902]]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 5
    assert fake.embedding_calls == [[[901, 902], [903]]]
    assert post(gw.url, {"input": [901, 902]}).headers["x-cache"] == "hit"


async def test_text_and_token_inputs_never_share_an_upstream_call(
    gw: Serve, fake: FakeUpstream
) -> None:
    fake.mode = "slow:0.2"
    bodies = [{"input": f"text {n}"} for n in range(12)] + [{"input": [700 + n]} for n in range(12)]
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/embeddings", json={"model": "fake", **b}) for b in bodies)
        )
    assert [r.status_code for r in responses] == [200] * 24
    kinds = [{type(item).__name__ for item in call} for call in fake.embedding_calls]
    assert all(len(kind) == 1 for kind in kinds), kinds
    assert len(fake.inputs) == 24


def test_a_local_model_without_a_tokenizer_refuses_ids(gw: Serve) -> None:
    response = httpx.post(
        f"{gw.url}/v1/embeddings", json={"model": "local", "input": [[1, 2]]}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "token_ids_unsupported"


@pytest.mark.parametrize("bad", [[[1, -2]], [[]], [[1], "text"], [1, "a"]])
def test_malformed_token_input_is_a_400(gw: Serve, bad: Any) -> None:
    response = post(gw.url, {"input": bad})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
