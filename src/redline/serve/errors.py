"""OpenAI-style JSON errors for every failure: ``{"error": {"message", "type", "param", "code"}}``.

Example::

    raise APIError(400, "input must not be empty", param="input", code="empty_input")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from redline.exceptions import (
    BatchTimeout,
    Closed,
    ModelNotReady,
    Overloaded,
    RateLimited,
    RedlineError,
    WorkerCrashed,
)

__all__ = [
    "ERROR_HANDLERS",
    "APIError",
    "ErrorHandler",
    "error_answer",
    "error_body",
    "error_response",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)
#: ``(request, exc) -> JSON error response``, as Starlette's exception handlers are.
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


class APIError(RedlineError):
    """An HTTP error with an OpenAI-style JSON body; raise it from route code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """The JSON bytes of an error (for code below ASGI, such as the HTTP protocol)."""
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }
    return orjson.dumps(body)


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The JSON error response itself (for middleware that cannot raise)."""
    body = error_body(status, message, param=param, code=code)
    return Response(body, status, headers, media_type="application/json")


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _validation_message(error: dict[str, Any]) -> tuple[str, str | None]:
    """One readable message and the field name for pydantic's first error."""
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = loc[0] if loc else None
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    kind = error.get("type", "")
    if kind == "missing":
        return f"'{param}' is required", param
    if kind == "json_invalid":
        return "request body is not valid JSON", None
    if param is None:
        return f"request body is invalid: {msg}", None
    where = ".".join(loc)
    return f"invalid '{where}': {msg}", param


async def _api_error(request: Request, exc: APIError) -> Response:
    return error_response(
        exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers
    )


async def _validation(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    message, param = _validation_message(errors[0] if errors else {})
    return error_response(400, message, param=param, code="invalid_value")


async def _http(request: Request, exc: StarletteHTTPException) -> Response:
    message = str(exc.detail) if exc.detail else "error"
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    return error_response(exc.status_code, message, headers=dict(exc.headers or {}))


async def _overloaded(request: Request, exc: Overloaded) -> Response:
    return error_response(
        429, f"server overloaded: {exc}", code="overloaded", headers=_retry_after(1)
    )


async def _rate_limited(request: Request, exc: RateLimited) -> Response:
    return error_response(429, str(exc), code="rate_limited", headers=_retry_after(exc.retry_after))


async def _not_ready(request: Request, exc: ModelNotReady) -> Response:
    return error_response(503, str(exc), code="model_not_ready", headers=_retry_after(1))


async def _closed(request: Request, exc: Closed) -> Response:
    return error_response(503, f"server is shutting down: {exc}", code="shutting_down")


async def _timed_out(request: Request, exc: BatchTimeout) -> Response:
    return error_response(
        504,
        f"the model did not answer in time: {exc} (REDLINE_REQUEST_TIMEOUT)",
        code="timeout",
        headers=_retry_after(1),
    )


async def _crashed(request: Request, exc: WorkerCrashed) -> Response:
    return error_response(
        503, f"the model worker stopped: {exc}", code="worker_crashed", headers=_retry_after(1)
    )


async def _disconnected(request: Request, exc: ClientDisconnect) -> Response:
    # Nobody reads this answer; 499 (nginx's "client closed request") is for the metrics
    # and the access log, in place of a 500 and a traceback.
    return error_response(
        499, "the client closed the connection before sending its body", code="disconnected"
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}", code="internal")


#: Exception class -> the coroutine that answers it; a subclass gets its nearest base's.
#: ``Exception`` is last resort: an unexpected error is logged and answered as a JSON 500.
ERROR_HANDLERS: Mapping[type[Exception], ErrorHandler] = {
    APIError: _api_error,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Overloaded: _overloaded,
    RateLimited: _rate_limited,
    ModelNotReady: _not_ready,
    Closed: _closed,
    BatchTimeout: _timed_out,
    WorkerCrashed: _crashed,
    ClientDisconnect: _disconnected,
    Exception: _unexpected,
}


async def error_answer(request: Request, exc: Exception) -> Response:
    """The JSON answer to *exc*, by the handler of its class or nearest base class."""
    for cls in type(exc).__mro__:
        handler = ERROR_HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    raise exc  # not an Exception subclass: nothing here answers it


def install_error_handlers(app: FastAPI) -> None:
    """Make every error FastAPI's routes raise (ours, 422s, 404s, overload) answer in the JSON
    shape, through the same :data:`ERROR_HANDLERS` as :func:`error_answer`."""
    for cls, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(cls, handler)
