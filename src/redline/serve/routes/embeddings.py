"""``POST /v1/embeddings``: OpenAI-compatible embeddings, cached per input and micro-batched.

The whole path of a request: :func:`begin_inference` (API key, ``Cache-Control``, the body read
and validated by :class:`EmbeddingRequest`, the model resolved) -> :func:`prepare_texts` (the
per-request limits) -> :func:`answer_from_l1` when every input is in the in-process cache tier
(``routes._hits``), else :func:`embed_texts` (the cache, then the micro-batcher and the runtime
for the misses) -> :func:`inference_response` (tokens, usage, the JSON answer and its headers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.embedder import embed_texts
from redline.serve.encoded_hits import base64_floats
from redline.serve.errors import APIError
from redline.serve.routes._common import begin_inference, inference_response, prepare_texts
from redline.serve.routes._hits import answer_from_l1
from redline.serve.routes.inference import InferenceRoute
from redline.serve.schemas import EmbeddingRequest, EmbeddingResponse

__all__ = ["ROUTE"]


async def create_embeddings(request: Request) -> Response:
    """Embed a string or a list of strings (``encoding_format`` float or base64)."""
    call = await begin_inference(request, EmbeddingRequest)
    body, state, model = call.body, call.state, call.model
    if body.dimensions is not None and body.dimensions > model.dimension:
        raise APIError(
            400,
            f"'dimensions' must be between 1 and {model.dimension} for {model.name}, "
            f"got {body.dimensions}",
            param="dimensions",
            code="invalid_dimensions",
        )
    texts = await call.run(prepare_texts, body.input, "input", state.settings)
    if not call.heavy:  # every input in the in-process cache: a spliced answer
        answer = await answer_from_l1(request, call, texts, body.dimensions, body.encoding_format)
        if answer is not None:
            return answer
    result = await embed_texts(state, model, texts, body.dimensions, offload=call.heavy)
    data = await call.run(_items, result.vectors, body.encoding_format)
    return await inference_response(request, call, "/v1/embeddings", data, texts, result)


#: Served by ``routes.inference.InferenceRoutes``, documented by ``serve.openapi``.
ROUTE = InferenceRoute("/v1/embeddings", create_embeddings, EmbeddingResponse)


def _items(vectors: npt.NDArray[np.float32], encoding_format: str) -> list[dict[str, Any]]:
    """One ``{"object": "embedding", ...}`` item per vector (base64: little-endian float32)."""
    if encoding_format == "base64":
        return [
            {"object": "embedding", "index": index, "embedding": base64_floats(row).decode()}
            for index, row in enumerate(vectors)
        ]
    return [
        {"object": "embedding", "index": index, "embedding": row}
        for index, row in enumerate(vectors)
    ]
