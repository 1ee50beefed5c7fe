"""``POST /v1/embeddings``: OpenAI-compatible embeddings, cached per input and micro-batched."""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from redline.serve.embedder import embed_texts
from redline.serve.errors import APIError
from redline.serve.model import count_tokens
from redline.serve.routes._common import (
    begin_inference,
    body_doc,
    json_response,
    prepare_texts,
    server_timing,
)
from redline.serve.schemas import EmbeddingRequest, EmbeddingResponse

__all__ = ["router"]

router = APIRouter(tags=["inference"])


@router.post(
    "/v1/embeddings", response_model=EmbeddingResponse, openapi_extra=body_doc(EmbeddingRequest)
)
async def create_embeddings(request: Request) -> Response:
    """Embed a string or a list of strings (``encoding_format`` float or base64)."""
    client, body, state, model, started = await begin_inference(request, EmbeddingRequest)
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
    tokens = sum(count_tokens(model, texts))
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(result.vectors):
        if body.encoding_format == "base64":
            encoded: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            encoded = vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    payload = {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    request.state.cache_result = result.cache_result
    if state.usage is not None:
        state.usage.record(
            request_id=request.state.request_id,
            route="/v1/embeddings",
            model=model.name,
            inputs=len(texts),
            tokens=tokens,
            cached_inputs=result.cached_inputs,
            client=client,
        )
    return json_response(payload, server_timing(result, time.perf_counter() - started))
