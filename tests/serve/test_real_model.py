"""The real all-MiniLM-L6-v2 behind a real uvicorn server, driven by the official OpenAI SDK."""

from __future__ import annotations

import base64
from typing import cast

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from redline.serve.minilm import MiniLMModel
from tests.serve._helpers import ThreadedServer

pytestmark = pytest.mark.model

SENTENCES = ["The cat sits on the mat.", "Stock markets fell sharply today.", "A kitten naps."]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)  # type: ignore[no-any-return]


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
async def test_openai_sdk_round_trip_equals_the_raw_model(
    minilm_server: ThreadedServer, minilm: MiniLMModel, encoding_format: str
) -> None:
    client = AsyncOpenAI(base_url=f"{minilm_server.url}/v1", api_key="unused", max_retries=0)
    try:
        result = await client.embeddings.create(
            model="all-MiniLM-L6-v2",
            input=SENTENCES,
            encoding_format=encoding_format,  # type: ignore[arg-type]
        )
    finally:
        await client.close()
    assert result.model == "all-MiniLM-L6-v2"
    assert [item.index for item in result.data] == [0, 1, 2]
    assert result.usage.prompt_tokens > len(SENTENCES)
    if encoding_format == "base64":  # asked for explicitly, the SDK hands back the strings
        served = np.array(
            [
                np.frombuffer(base64.b64decode(cast(str, item.embedding)), dtype="<f4")
                for item in result.data
            ]
        )
    else:
        served = np.array([item.embedding for item in result.data], dtype=np.float32)
    raw = minilm.encoder.encode(SENTENCES, normalize_embeddings=True)
    assert served.shape == (3, 384)
    assert np.all(_cosines(served, raw) >= 0.9999)


async def test_openai_sdk_default_encoding_and_dimensions(minilm_server: ThreadedServer) -> None:
    client = AsyncOpenAI(base_url=f"{minilm_server.url}/v1", api_key="unused", max_retries=0)
    try:
        result = await client.embeddings.create(
            model="all-MiniLM-L6-v2", input="short text", dimensions=64
        )
    finally:
        await client.close()
    vector = np.array(result.data[0].embedding)
    assert vector.shape == (64,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4


async def test_similar_sentences_are_closer_and_predict_picks_the_topic(
    minilm_server: ThreadedServer,
) -> None:
    async with httpx.AsyncClient(base_url=minilm_server.url) as client:
        body = (await client.post("/v1/embeddings", json={"input": SENTENCES})).json()
        vectors = np.array([item["embedding"] for item in body["data"]])
        cat, market, kitten = vectors
        assert float(cat @ kitten) > float(cat @ market)
        predict = await client.post(
            "/v1/predict",
            json={
                "text": ["My cat chased a mouse.", "Investors sold stocks as markets fell."],
                "labels": ["pets and animals", "money and stock markets", "football"],
            },
        )
    labels = [item["label"] for item in predict.json()["data"]]
    assert labels == ["pets and animals", "money and stock markets"]


async def test_token_counts_come_from_the_tokenizer(minilm: MiniLMModel) -> None:
    counts = minilm.count_tokens(["hello world", "a"])
    assert counts == [4, 3]  # [CLS] hello world [SEP], [CLS] a [SEP]


async def test_models_endpoint_shows_the_real_model(minilm_server: ThreadedServer) -> None:
    async with httpx.AsyncClient(base_url=minilm_server.url) as client:
        card = (await client.get("/v1/models/all-MiniLM-L6-v2")).json()
        ready = await client.get("/ready")
    assert (card["dimension"], card["max_input_tokens"]) == (384, 256)
    assert ready.status_code == 200
