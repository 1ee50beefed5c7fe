"""Are a server's vectors the model's? Cosine of each to the package's own vector of the text.

Example::

    reference = package_vectors(encoder, texts)
    agreement(server_vectors(server.embeddings_url, "all-MiniLM-L6-v2", texts), reference)
    # {"mean_cosine": 0.999999, "min_cosine": 0.999998, "sentences": 300}
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from .servers import post_json


def package_vectors(encoder: Any, texts: list[str]) -> npt.NDArray[np.float32]:
    """The package's ``SentenceTransformer.encode``, normalised: the reference."""
    vectors = encoder.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def server_vectors(
    url: str, model: str, texts: list[str], batch: int = 32
) -> npt.NDArray[np.float32]:
    """Vectors an OpenAI-style embeddings endpoint returns for *texts*, in order."""
    rows: list[list[float]] = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        answer = json.loads(post_json(url, {"input": chunk, "model": model}))
        data = sorted(answer["data"], key=lambda item: item["index"])
        if len(data) != len(chunk):
            raise ValueError(f"{url} returned {len(data)} vectors for {len(chunk)} inputs")
        rows += [item["embedding"] for item in data]
    return np.asarray(rows, dtype=np.float32)


def agreement(
    vectors: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Mean and min cosine of each row of *vectors* to the same row of *reference*."""
    if vectors.shape != reference.shape:
        raise ValueError(f"shape {vectors.shape} against reference {reference.shape}")
    a = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    b = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    cosines = (a * b).sum(axis=1)
    return {
        "mean_cosine": round(float(cosines.mean()), 6),
        "min_cosine": round(float(cosines.min()), 6),
        "sentences": len(cosines),
    }
