"""``POST /v1/predict``: zero-shot classification by embedding cosine similarity.

Each text and each label is embedded (through the same cache and batcher as
``/v1/embeddings``); ``similarities`` are the raw cosines and ``scores`` are
``softmax(20 * cosine)`` over the labels (they sum to 1); ``label`` is the best one.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.embedder import embed_texts
from redline.serve.routes._common import begin_inference, inference_response, prepare_texts
from redline.serve.schemas import PredictRequest, PredictResponse

__all__ = ["SCORE_SCALE", "router"]

SCORE_SCALE = 20.0
router = APIRouter(tags=["inference"])


# The request body is documented with the server's limits by serve.openapi.
@router.post("/v1/predict", response_model=PredictResponse)
async def predict(request: Request) -> Response:
    """Classify each text against the caller's labels."""
    call = await begin_inference(request, PredictRequest)
    body, state, model = call.body, call.state, call.model
    texts = prepare_texts(body.text, "text", state.settings)
    labels = prepare_texts(body.labels, "labels", state.settings)
    result = await embed_texts(state, model, texts + labels, None)
    vectors = result.vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit = vectors / norms
    cosines = unit[: len(texts)] @ unit[len(texts) :].T
    logits = SCORE_SCALE * cosines
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    data = []
    for index in range(len(texts)):
        best = int(np.argmax(cosines[index]))
        data.append(
            {
                "index": index,
                "label": body.labels[best],
                "scores": {lab: float(p) for lab, p in zip(body.labels, probs[index], strict=True)},
                "similarities": {
                    lab: float(c) for lab, c in zip(body.labels, cosines[index], strict=True)
                },
            }
        )
    return await inference_response(request, call, "/v1/predict", data, texts, result)
