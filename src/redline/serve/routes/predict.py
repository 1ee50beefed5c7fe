"""``POST /v1/predict``: zero-shot classification by embedding cosine similarity.

Each text and each label is embedded (through the same cache and batcher as
``/v1/embeddings``); ``similarities`` are the raw cosines and ``scores`` are
``softmax(20 * cosine)`` over the labels (they sum to 1); ``label`` is the best one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.embedder import embed_texts
from redline.serve.routes._common import begin_inference, inference_response, prepare_texts
from redline.serve.routes.inference import InferenceRoute
from redline.serve.schemas import PredictRequest, PredictResponse

__all__ = ["ROUTE", "SCORE_SCALE"]

SCORE_SCALE = 20.0


async def predict(request: Request) -> Response:
    """Classify each text against the caller's labels."""
    call = await begin_inference(request, PredictRequest)
    body, state, model = call.body, call.state, call.model
    texts = await call.run(prepare_texts, body.text, "text", state.settings)
    labels = await call.run(prepare_texts, body.labels, "labels", state.settings)
    result = await embed_texts(state, model, texts + labels, None, offload=call.heavy)
    data = await call.run(_predictions, result.vectors, len(texts), body.labels)
    return await inference_response(request, call, "/v1/predict", data, texts, result)


#: Served by ``routes.inference.InferenceRoutes``, documented by ``serve.openapi``.
ROUTE = InferenceRoute("/v1/predict", predict, PredictResponse)


def _predictions(
    vectors: npt.NDArray[np.float32], count: int, labels: list[str]
) -> list[dict[str, Any]]:
    """The best label, scores and similarities of each of the first *count* vectors against
    the *labels* vectors after them."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit = vectors / norms
    cosines = unit[:count] @ unit[count:].T
    logits = SCORE_SCALE * cosines
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    best = np.argmax(cosines, axis=1).tolist()
    return [
        {
            "index": index,
            "label": labels[best[index]],
            "scores": dict(zip(labels, probs[index].tolist(), strict=True)),
            "similarities": dict(zip(labels, cosines[index].tolist(), strict=True)),
        }
        for index in range(count)
    ]
