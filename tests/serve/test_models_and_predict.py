"""/v1/models from the models served (not the cache or the registry) and zero-shot /v1/predict."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import httpx
import pytest

from redline.serve.model import Model
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


async def test_cards_come_from_the_served_models_not_the_cache_or_registry(
    hashing_client: Pair,
) -> None:
    client, state = hashing_client
    assert state.cache is not None
    assert state.database is not None
    # what the old route read cache-aside, and a row another server registered
    await state.cache.set("model-info:hashing", {"id": "hashing", "version": "from-cache"})
    elsewhere = SimpleNamespace(name="elsewhere", version="9", dimension=8)
    await state.database.register_model(cast(Model, elsewhere))
    card = (await client.get("/v1/models/hashing")).json()
    assert (card["version"], card["dimension"], card["owned_by"]) == ("1", 32, "redline")
    assert (await client.get("/v1/models")).json()["data"] == [card]
    assert (await client.get("/v1/models/elsewhere")).status_code == 404
    assert (await client.get("/v1/models/hashing")).json()["created"] == card["created"]


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
