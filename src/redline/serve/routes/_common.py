"""Helpers shared by the routes: the app state, input limits, JSON responses; not public API.

CPU work that grows with the request (decoding and validating the body, normalising the
inputs, hashing them for the cache, counting tokens, encoding the answer) runs on the event
loop for a small request, where a thread hop would cost more than the work, and in
``ServerState.offload``'s threads for a large one (body over :data:`OFFLOAD_BYTES`), so that
one big request cannot hold up every other (``redline_event_loop_lag_seconds`` shows it when
something does). A large answer goes to the socket in slices (:class:`EncodedJSON`), with the
loop free between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from redline.exceptions import ModelNotFound
from redline.serve.auth import authorize, unchecked_client
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
    "OFFLOAD_BYTES",
    "SEND_SLICE_BYTES",
    "EncodedJSON",
    "InferenceCall",
    "begin_inference",
    "encoded_answer",
    "inference_response",
    "json_response",
    "parse_body",
    "prepare_texts",
    "record_usage",
    "require_json",
    "server_state",
    "server_timing",
    "timing_header",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
P = ParamSpec("P")
R = TypeVar("R")

#: An answer over this many bytes is written to the socket in slices of this many, with the
#: loop free between them: one write of a 2.6 MB answer (256 vectors as JSON floats) held the
#: loop 0.6-8 ms, mostly copying into the socket's buffer.
SEND_SLICE_BYTES = 256 * 1024

#: Request bodies over this many bytes are worked on in a thread, smaller ones on the loop
#: (~1 ms of work at most: a thread hop costs ~50 us).
OFFLOAD_BYTES = 64 * 1024


def require_json(request: Request) -> None:
    """415 unless the body is declared ``application/json`` (parameters such as charset are
    fine). A browser's cross-origin "simple" POST cannot send that type without a CORS
    preflight, so it cannot spend the server's capacity."""
    # The raw header list, not ``request.headers``: this runs on every request.
    _check_json(next((v for k, v in request.scope["headers"] if k == b"content-type"), None))


def _check_json(raw: bytes | None) -> None:
    """:func:`require_json` on the raw ``Content-Type`` value (None: not sent)."""
    if raw is None:
        raise APIError(
            415,
            "missing Content-Type: send the body as JSON with 'Content-Type: application/json'",
            code="unsupported_media_type",
        )
    if raw == b"application/json":
        return
    declared = raw.decode("latin-1")
    if declared.partition(";")[0].strip().lower() != "application/json":
        raise APIError(
            415,
            f"unsupported Content-Type {declared[:100]!r}: send the body as JSON with "
            "'Content-Type: application/json'",
            code="unsupported_media_type",
        )


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """Parse and validate the JSON body; the hot path skips FastAPI's dependency machinery."""
    require_json(request)
    body, _ = await _read_body(request, model)
    return body


async def _read_body(request: Request, model: type[ModelT]) -> tuple[ModelT, bool]:
    """The body as *model*, and whether it is large (decoded in a thread, not on the loop)."""
    raw = await _receive_body(request)
    if len(raw) > OFFLOAD_BYTES:
        return await server_state(request).offload.run(_decode, raw, model), True
    return _decode(raw, model), False


async def _receive_body(request: Request) -> bytes:
    """The whole body, read straight from ``receive`` (what ``request.body()`` does, without
    an async generator per request); ``ClientDisconnect`` if the client went away. The routes
    read the body once, here: nothing reads it through the request afterwards."""
    receive = request.receive
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if not chunks:
                return body
            chunks.append(body)
            return b"".join(chunks)
        chunks.append(body)


def _decode(raw: bytes, model: type[ModelT]) -> ModelT:
    """The body as *model* (400 unless a JSON object; 422 naming what is invalid)."""
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
    heavy: bool  # a large body: work on it in a thread, not on the loop

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)``: in a thread for a heavy call, else right here."""
        if self.heavy:
            return await self.state.offload.run(function, *args, **kwargs)
        return function(*args, **kwargs)


async def begin_inference(request: Request, schema: type[ModelT]) -> InferenceCall[ModelT]:
    """Authorize, parse the body, resolve the model (400 naming ``model`` if not served)."""
    client = unchecked_client(request) or await authorize(request)
    state = server_state(request)
    # One pass over the raw header list (``request.headers`` builds a mapping per request).
    content_type = cache_control = None
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"cache-control":
            cache_control = value if cache_control is None else cache_control
    try:  # set on every request: an ASGI caller may reuse one task for several requests
        policy = parse_cache_control(cache_control.decode("latin-1") if cache_control else None)
        if state.settings.cache_tenants:
            policy = tenant_rules(state.settings.cache_tenants).apply(client, policy)
        use_policy(policy)
    except CacheControlError as exc:
        code = "cache_control_refused" if exc.status == 403 else "invalid_cache_control"
        raise APIError(exc.status, str(exc), param="Cache-Control", code=code) from None
    _check_json(content_type)
    body, heavy = await _read_body(request, schema)
    started = time.perf_counter()
    try:
        model = state.resolve_model(getattr(body, "model", None))
    except ModelNotFound as exc:
        raise APIError(400, str(exc), param="model", code="model_not_found") from exc
    return InferenceCall(client, body, state, model, started, heavy)


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
    counts = await call.run(count_tokens, call.model, texts)
    tokens = sum(counts)
    cached_tokens = sum(n for n, hit in zip(counts, result.hits, strict=False) if hit)
    await record_usage(request, call, route, result.cache_result, len(texts), tokens,
                       result.cached_inputs, cached_tokens)  # fmt: skip
    content = await call.run(_encode_list, data, call.model.name, tokens, call.heavy)
    timing = _timing(result, time.perf_counter() - call.started)
    return encoded_answer(content, result.cache_result, timing, result.age)


async def record_usage(
    request: Request,
    call: InferenceCall[Any],
    route: str,
    cache_result: str,
    inputs: int,
    tokens: int,
    cached_inputs: int,
    cached_tokens: int,
) -> None:
    """Note the cache result for the access log and record the request's usage (with a
    durable usage queue, this waits until the record is in it)."""
    # The scope's state dict itself: ``request.state`` wraps it anew on every access.
    scope_state = request.scope["state"]
    scope_state["cache_result"] = cache_result
    if call.state.usage is not None:
        await call.state.usage.record(
            request_id=scope_state["request_id"],
            client_request_id=scope_state["client_request_id"],
            route=route,
            model=call.model.name,
            inputs=inputs,
            tokens=tokens,
            cached_inputs=cached_inputs,
            cached_tokens=cached_tokens,
            client=call.client,
        )


def encoded_answer(content: bytes, cache_result: str, timing: str, age: float | None) -> Response:
    """The 200 answer of an inference route: *content* with ``X-Cache``, ``Server-Timing``
    (*timing*) and, when the cache told it, ``Age``."""
    raw = [
        (b"x-cache", cache_result.encode("latin-1")),
        (b"server-timing", timing.encode("latin-1")),
    ]
    if age is not None:
        raw.append((b"age", str(int(age)).encode("latin-1")))
    return EncodedJSON(content, raw)


class EncodedJSON(Response):
    """A 200 answer of already-encoded JSON with headers already in their raw form: the
    same message a :class:`Response` sends, without building it from a mapping on every
    request. A body over :data:`SEND_SLICE_BYTES` is sent in slices of that size, the loop
    free between them."""

    media_type = "application/json"

    def __init__(self, content: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.background = None
        self.body = content
        raw_headers.append((b"content-length", str(len(content)).encode("latin-1")))
        raw_headers.append((b"content-type", b"application/json"))
        self.raw_headers = raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if len(body) <= SEND_SLICE_BYTES:
            await send({"type": "http.response.body", "body": body})
            return
        for start in range(0, len(body), SEND_SLICE_BYTES):
            end = start + SEND_SLICE_BYTES
            more = end < len(body)
            await send({"type": "http.response.body", "body": body[start:end], "more_body": more})
            # A turn of the loop between slices: each reaches the socket on its own (writes
            # made in one turn are joined into one) and other requests run meanwhile.
            await asyncio.sleep(0)


def _encode_list(data: list[dict[str, Any]], model: str, tokens: int, by_item: bool) -> bytes:
    """The OpenAI-style list as JSON; *by_item* encodes one item per call, so that a thread
    encoding a large answer lets go of the GIL between items."""
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    if not by_item:
        payload = {"object": "list", "data": data, "model": model, "usage": usage}
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    items = b",".join([orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY) for item in data])
    tail = orjson.dumps({"model": model, "usage": usage})
    return b'{"object":"list","data":[' + items + b"]," + tail[1:]


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
        # The limit counts characters as sent, as the OpenAPI document's maxLength does.
        if len(text) > settings.max_chars and not settings.truncate:
            raise APIError(
                413,
                f"'{where}' has {len(text)} characters; at most {settings.max_chars} are "
                "allowed (REDLINE_MAX_CHARS; REDLINE_TRUNCATE=true truncates instead)",
                param=field,
                code="input_too_long",
            )
        normal = normalize_text(text)
        if not normal:
            raise APIError(
                400, f"'{where}' is empty; send non-empty strings", param=field, code="empty_input"
            )
        if settings.truncate:
            normal = normal[: settings.max_chars]
        # Hashed here, where a large request's inputs are prepared (in a thread): a str keeps
        # its hash, so the dict lookups on the loop that follow (inputs repeated within the
        # request, the batcher's in-flight duplicates) do not hash up to 2 MB of text there.
        hash(normal)
        prepared.append(normal)
    return prepared


def server_timing(result: EmbedResult, total_seconds: float) -> dict[str, str]:
    """``X-Cache`` and ``Server-Timing`` (cache, queue, inference, total in ms) headers."""
    headers = {"X-Cache": result.cache_result, "Server-Timing": _timing(result, total_seconds)}
    if result.age is not None:
        headers["Age"] = str(int(result.age))
    return headers


def _timing(result: EmbedResult, total_seconds: float) -> str:
    """The ``Server-Timing`` value: cache, queue, inference and total, in ms."""
    return timing_header(
        result.cache_seconds, result.queue_seconds, result.inference_seconds, total_seconds
    )


def timing_header(cache: float, queue: float, inference: float, total: float) -> str:
    """The ``Server-Timing`` value of these stage times (seconds), in ms."""
    return (
        f"cache;dur={cache * 1000:.3f}, queue;dur={queue * 1000:.3f}, "
        f"inference;dur={inference * 1000:.3f}, total;dur={total * 1000:.3f}"
    )
