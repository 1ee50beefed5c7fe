"""OpenAI token-id inputs on the local real model: ids are decoded by the model's own
tokenizer, embedded like the text they stand for, and billed one token per id."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from redline.serve.minilm import MiniLMModel
from tests.serve._helpers import ThreadedServer

pytestmark = pytest.mark.model


def test_token_ids_embed_like_their_text(
    minilm_server: ThreadedServer, minilm: MiniLMModel
) -> None:
    text = "the cat sat on the mat"
    ids = minilm.encoder.tokenizer(text)["input_ids"]  # with [CLS] ... [SEP]
    with httpx.Client(base_url=minilm_server.url, timeout=60) as client:
        by_text = client.post("/v1/embeddings", json={"input": [text]}).json()
        by_ids = client.post("/v1/embeddings", json={"input": ids})
        assert by_ids.status_code == 200, by_ids.text
        both = client.post("/v1/embeddings", json={"input": [ids, ids[1:-1]]}).json()
    np.testing.assert_allclose(
        by_ids.json()["data"][0]["embedding"], by_text["data"][0]["embedding"], atol=1e-6
    )
    assert by_ids.json()["usage"]["prompt_tokens"] == len(ids)
    assert both["usage"]["prompt_tokens"] == 2 * len(ids) - 2
    np.testing.assert_allclose(
        both["data"][1]["embedding"], by_text["data"][0]["embedding"], atol=1e-6
    )
