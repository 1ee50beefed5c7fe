"""The OpenAPI document of one app: what this server, with its settings and model, answers.

FastAPI documents its routes and their success bodies; the inference routes, which FastAPI does
not serve (``routes.inference``), are documented from their own :class:`InferenceRoute` records;
:func:`describe_openapi` adds what only the server knows:

- the JSON error answers each operation can give (``{"error": {...}}``, with ``Retry-After``
  on 429 and ``WWW-Authenticate`` on 401), and only those its settings make possible (401
  only with API keys, 429 on the model registry only with a rate limit or keys);
- no 422 anywhere: this server answers bad input with 400;
- request bodies with the limits the server enforces: ``maxItems`` is ``max_inputs``,
  ``maxLength`` is ``max_chars`` (unless it truncates), blank strings are refused by a
  pattern, ``model`` is one of the served ids and ``dimensions`` at most the model's once
  the model is loaded;
- the bearer scheme on every operation that checks a key, when keys are configured.

Example::

    document = describe_openapi(app_openapi_document, state, INFERENCE_ROUTES)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from redline.serve.routes.inference import InferenceRoute
from redline.serve.schemas import ErrorResponse, RequestLimits, request_body_schemas
from redline.serve.state import ServerState

__all__ = ["describe_openapi"]

_ERROR_REF = "#/components/schemas/ErrorResponse"
_INFERENCE = ("/v1/embeddings", "/v1/predict")
_REGISTRY = ("/v1/models", "/v1/models/{model_id}")

_WHEN = {
    400: "Invalid request: not JSON, a field missing or out of range, an unknown model.",
    401: "Missing or wrong API key.",
    404: "No such model.",
    413: "Body over REDLINE_MAX_BODY_BYTES, or an input over REDLINE_MAX_CHARS characters.",
    415: "Body not declared 'Content-Type: application/json'.",
    429: "Too many requests: the rate limit, the failed-authentication limit or a full queue.",
    503: "The model is not loaded yet, its worker stopped, or the server is shutting down.",
    504: "The model did not answer within REDLINE_REQUEST_TIMEOUT.",
}
_RETRY_AFTER = {"schema": {"type": "integer", "minimum": 1}, "description": "Seconds to wait."}
_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}},
    429: {"Retry-After": {"required": True, **_RETRY_AFTER}},
    503: {"Retry-After": {"required": False, **_RETRY_AFTER}},
    504: {"Retry-After": {"required": True, **_RETRY_AFTER}},
}


def describe_openapi(
    base: dict[str, Any], state: ServerState, inference: Sequence[InferenceRoute] = ()
) -> dict[str, Any]:
    """A copy of FastAPI's *base* document with the *inference* routes in it (first), that says
    what this server answers (see module)."""
    document = copy.deepcopy(base)
    settings = state.settings
    keys = bool(settings.api_keys)
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    paths: dict[str, dict[str, Any]] = {
        route.path: {"post": route.operation(schemas)} for route in inference
    }
    paths.update(document.get("paths", {}))
    document["paths"] = paths
    document["components"]["schemas"] = dict(sorted(schemas.items()))  # as FastAPI orders them
    authenticated: list[dict[str, Any]] = []
    for path, operations in paths.items():
        for method, operation in operations.items():
            operation.get("responses", {}).pop("422", None)
            statuses = _error_statuses(method, path, state)
            for status in statuses:
                operation["responses"][str(status)] = _error_response(status)
            if 401 in statuses:
                authenticated.append(operation)
    for path, schema in request_body_schemas(_limits(state)).items():
        if path in paths:
            paths[path]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
    model_id = paths.get("/v1/models/{model_id}", {}).get("get", {})
    for parameter in model_id.get("parameters", ()):
        parameter["schema"]["minLength"] = 1
    components = document["components"]
    schemas = components["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorResponse"] = error
    if keys:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for operation in authenticated:
            operation["security"] = [{"bearer": []}]
    return document


def _error_statuses(method: str, path: str, state: ServerState) -> list[int]:
    """The error statuses *method* *path* can answer under this server's settings."""
    settings = state.settings
    keys = bool(settings.api_keys)
    auth = [401, 429] if keys else []
    if method == "post" and path in _INFERENCE:
        return sorted({400, 413, 415, 429, 503, 504, *auth})
    if method == "get" and path in _REGISTRY:
        limited = [429] if settings.rate_limit is not None else []
        missing = [404] if path.endswith("{model_id}") else []
        return sorted({*auth, *limited, *missing})
    if method == "get" and path in ("/metrics", "/status.json") and keys and settings.metrics_auth:
        return auth
    return []


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHEN[status],
        "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}},
    }
    if status in _HEADERS:
        response["headers"] = copy.deepcopy(_HEADERS[status])
    return response


def _limits(state: ServerState) -> RequestLimits:
    settings = state.settings
    model = state.model if state.ready else None
    return RequestLimits(
        max_inputs=settings.max_inputs,
        max_chars=None if settings.truncate else settings.max_chars,
        model_ids=tuple(state.model_ids()) if model is not None else None,
        dimension=model.dimension if model is not None else None,
    )
