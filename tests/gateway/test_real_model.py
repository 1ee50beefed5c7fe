"""The gateway in front of a ``redline serve`` running the real all-MiniLM-L6-v2."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.gateway._procs import Serve, gateway

pytestmark = [pytest.mark.slow, pytest.mark.model]

TEXTS = [
    "The cat sat on the mat.",
    "A gateway caches embeddings per input.",
    "The cat sat on the mat.",
    "Redis keeps the vectors for everyone.",
]


def test_gateway_equals_the_real_model_upstream() -> None:
    """Usage too: each input's share is counted by the model's own tokenizer (tokenizer=)."""
    with (
        Serve("--cache-url", "none") as upstream,
        gateway(f"up={upstream.url}?tokenizer=minilm") as gw,
        httpx.Client(timeout=60) as client,
    ):
        bodies: tuple[dict[str, object], ...] = (
            {"input": TEXTS},
            {"input": TEXTS[1:], "dimensions": 64},
            {"input": TEXTS, "encoding_format": "float"},
        )
        for body in bodies:
            body["model"] = "all-MiniLM-L6-v2"
            direct = client.post(f"{upstream.url}/v1/embeddings", json=body).json()
            via = client.post(f"{gw.url}/v1/embeddings", json=body)
            assert via.status_code == 200, via.text
            got = via.json()
            assert got["usage"] == direct["usage"]
            assert got["model"] == direct["model"]
            assert [r["index"] for r in got["data"]] == [r["index"] for r in direct["data"]]
            np.testing.assert_allclose(
                np.array([r["embedding"] for r in got["data"]]),
                np.array([r["embedding"] for r in direct["data"]]),
                atol=1e-6,
            )
