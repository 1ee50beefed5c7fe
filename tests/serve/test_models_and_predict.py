"""/v1/models from the database registry (cache-aside) and zero-shot /v1/predict."""

from __future__ import annotations

import httpx
import pytest

from redline.serve.routes.models import get_model_info
from redline.serve.state import ServerState

Pair = tuple[httpx.AsyncClient, ServerState]


async def test_models_lists_the_registered_model(hashing_client: Pair) -> None:
    client, _ = hashing_client
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert card["id"] == "hashing"
    assert card["object"] == "model"
    assert card["dimension"] == 32
    assert card["owned_by"] == "redline"


async def test_model_by_id_and_unknown_id(hashing_client: Pair) -> None:
    client, _ = hashing_client
    card = (await client.get("/v1/models/hashing")).json()
    assert (card["id"], card["version"]) == ("hashing", "1")
    missing = await client.get("/v1/models/unknown-model")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_get_model_info_is_cache_aside(hashing_client: Pair) -> None:
    _, state = hashing_client
    assert state.cache is not None
    await state.cache.delete("model-info:hashing")
    first = await get_model_info(state, "hashing")
    assert first is not None
    assert await state.cache.get("model-info:hashing", None) == first
    await state.cache.set("model-info:hashing", {**first, "version": "from-cache"})
    again = await get_model_info(state, "hashing")
    assert again is not None
    assert again["version"] == "from-cache"


async def test_predict_picks_the_label_equal_to_the_text(hashing_client: Pair) -> None:
    client, _ = hashing_client
    response = await client.post(
        "/v1/predict", json={"text": ["bird", "fish"], "labels": ["cat", "bird", "fish"]}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert [item["label"] for item in data] == ["bird", "fish"]
    for item in data:
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert item["similarities"][item["label"]] == pytest.approx(1.0, abs=1e-5)
    assert "server-timing" in response.headers
