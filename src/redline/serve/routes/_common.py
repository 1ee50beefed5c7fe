"""Helpers shared by the routes: the app state, input limits, JSON responses; not public API."""

from __future__ import annotations

import time
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from redline.exceptions import ModelNotFound
from redline.serve.auth import authorize
from redline.serve.cache_control import (
    CacheControlError,
    parse_cache_control,
    tenant_rules,
    use_policy,
)
from redline.serve.embedder import EmbedResult, normalize_text
from redline.serve.errors import APIError
from redline.serve.model import Model, count_tokens
from redline.serve.settings import Settings
from redline.serve.state import ServerState
from redline.serve.token_input import is_ids

__all__ = [
    "InferenceCall",
    "begin_inference",
    "body_doc",
    "inference_response",
    "json_response",
    "parse_body",
    "prepare_texts",
    "server_state",
    "server_timing",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the route parses itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """Parse and validate the JSON body; the hot path skips FastAPI's dependency machinery."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise APIError(400, "request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


class InferenceCall(NamedTuple, Generic[ModelT]):
    """What every inference route starts from."""

    client: str
    body: ModelT
    state: ServerState
    model: Model
    started: float


async def begin_inference(request: Request, schema: type[ModelT]) -> InferenceCall[ModelT]:
    """Authorize, parse the body, resolve the model (400 naming ``model`` if not served)."""
    client = await authorize(request)
    state = server_state(request)
    try:  # set on every request: an ASGI caller may reuse one task for several requests
        policy = parse_cache_control(request.headers.get("cache-control"))
        if state.settings.cache_tenants:
            policy = tenant_rules(state.settings.cache_tenants).apply(client, policy)
        use_policy(policy)
    except CacheControlError as exc:
        code = "cache_control_refused" if exc.status == 403 else "invalid_cache_control"
        raise APIError(exc.status, str(exc), param="Cache-Control", code=code) from None
    body = await parse_body(request, schema)
    started = time.perf_counter()
    try:
        model = state.resolve_model(getattr(body, "model", None))
    except ModelNotFound as exc:
        raise APIError(400, str(exc), param="model", code="model_not_found") from exc
    return InferenceCall(client, body, state, model, started)


async def inference_response(
    request: Request,
    call: InferenceCall[Any],
    route: str,
    data: list[dict[str, Any]],
    texts: list[str],
    result: EmbedResult,
) -> Response:
    """The end of every inference route: count the tokens of *texts*, record usage (with a
    durable usage queue, the answer waits until the record is in it), note the cache result
    for the access log, and answer the OpenAI-style list with ``X-Cache`` and
    ``Server-Timing``."""
    counts = count_tokens(call.model, texts)
    tokens = sum(counts)
    cached_tokens = sum(n for n, hit in zip(counts, result.hits, strict=False) if hit)
    request.state.cache_result = result.cache_result
    if call.state.usage is not None:
        await call.state.usage.record(
            request_id=request.state.request_id,
            client_request_id=request.state.client_request_id,
            route=route,
            model=call.model.name,
            inputs=len(texts),
            tokens=tokens,
            cached_inputs=result.cached_inputs,
            cached_tokens=cached_tokens,
            client=call.client,
        )
    payload = {
        "object": "list",
        "data": data,
        "model": call.model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(payload, server_timing(result, time.perf_counter() - call.started))


def server_state(request: Request) -> ServerState:
    """The app's :class:`ServerState`."""
    state: ServerState = request.app.state.redline
    return state


def json_response(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    """A JSON response encoded by orjson (numpy arrays serialised natively)."""
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status, headers, media_type="application/json")


def prepare_texts(raw: str | list[Any], field: str, settings: Settings) -> list[str]:
    """Normalise inputs and enforce the per-request limits (400/413 naming the field)."""
    texts: list[str] = [raw] if isinstance(raw, str) else raw
    if len(texts) > settings.max_inputs:
        raise APIError(
            400,
            f"'{field}' has {len(texts)} items; at most {settings.max_inputs} are allowed "
            "(REDLINE_MAX_INPUTS)",
            param=field,
            code="too_many_inputs",
        )
    prepared = []
    for index, text in enumerate(texts):
        if is_ids(text):  # token ids: checked when parsed, never normalised or cut
            prepared.append(text)
            continue
        where = field if isinstance(raw, str) else f"{field}[{index}]"
        normal = normalize_text(text)
        if not normal:
            raise APIError(
                400, f"'{where}' is empty; send non-empty strings", param=field, code="empty_input"
            )
        if len(normal) > settings.max_chars:
            if not settings.truncate:
                raise APIError(
                    413,
                    f"'{where}' has {len(normal)} characters; at most {settings.max_chars} are "
                    "allowed (REDLINE_MAX_CHARS; REDLINE_TRUNCATE=true truncates instead)",
                    param=field,
                    code="input_too_long",
                )
            normal = normal[: settings.max_chars]
        prepared.append(normal)
    return prepared


def server_timing(result: EmbedResult, total_seconds: float) -> dict[str, str]:
    """``X-Cache`` and ``Server-Timing`` (cache, queue, inference, total in ms) headers."""
    timing = (
        f"cache;dur={result.cache_seconds * 1000:.3f}, "
        f"queue;dur={result.queue_seconds * 1000:.3f}, "
        f"inference;dur={result.inference_seconds * 1000:.3f}, "
        f"total;dur={total_seconds * 1000:.3f}"
    )
    headers = {"X-Cache": result.cache_result, "Server-Timing": timing}
    if result.age is not None:
        headers["Age"] = str(int(result.age))
    return headers
