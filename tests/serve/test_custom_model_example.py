"""The custom model example loads through load_model and serves embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from redline.serve.model import Model, load_model
from tests.serve._helpers import make_settings, running_app


def test_example_model_satisfies_the_protocol() -> None:
    model = load_model("examples.custom_model:create_model")
    assert isinstance(model, Model)
    vectors = np.asarray(model.batch(["hello world", "help the world", "zebra"]))
    assert vectors.shape == (3, 256)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])


async def test_example_model_is_served(tmp_path: Path) -> None:
    model = load_model("examples.custom_model:create_model")
    async with running_app(make_settings(tmp_path), model) as (client, _):
        body = (await client.post("/v1/embeddings", json={"input": "hello"})).json()
    assert body["model"] == "trigram-hash"
    assert len(body["data"][0]["embedding"]) == 256
