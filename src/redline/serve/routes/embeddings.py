"""``POST /v1/embeddings``: OpenAI-compatible embeddings, cached per input and micro-batched."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.embedder import embed_texts
from redline.serve.errors import APIError
from redline.serve.routes._common import begin_inference, inference_response, prepare_texts
from redline.serve.schemas import EmbeddingRequest, EmbeddingResponse

__all__ = ["router"]

router = APIRouter(tags=["inference"])


# The request body is documented with the server's limits by serve.openapi.
@router.post("/v1/embeddings", response_model=EmbeddingResponse)
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
    texts = prepare_texts(body.input, "input", state.settings)
    result = await embed_texts(state, model, texts, body.dimensions)
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(result.vectors):
        if body.encoding_format == "base64":
            encoded: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            encoded = vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return await inference_response(request, call, "/v1/embeddings", data, texts, result)
