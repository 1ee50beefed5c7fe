"""One ASGI middleware for every request: a request id of the server's own (the client's
``X-Request-ID`` is kept beside it and echoed; the server's is sent when none came), the body size
limit (413 JSON), Prometheus request metrics and one structured JSON log line per request.
An error that nothing inside answered is answered here (``errors.error_answer``: the JSON shape,
a 500 for the unexpected), so that every answer, a 500 included, carries the request id and is
counted and logged.

Example::

    app.add_middleware(RequestMiddleware, state=state)
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redline.serve.errors import APIError, error_answer, error_response
from redline.serve.metrics import method_label
from redline.serve.state import ServerState

__all__ = ["RequestMiddleware"]

logger = logging.getLogger("redline.serve.access")
_EDGE_ID = re.compile(rb"^[0-9a-f]{32}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestMiddleware:
    """Request id, size limit, metrics and the access log around the whole app."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.max_body = state.settings.max_body_bytes
        # Unique without a syscall per request: a random per-process prefix plus a counter.
        self._id_prefix = os.urandom(8).hex() + "-"
        self._ids = itertools.count(1)
        self.trust_edge_id = state.settings.trust_edge_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or ())
        # The server's own id (unique) keys the usage row; the client's goes beside it and is
        # what the response echoes, so a shared client id can neither merge nor erase rows.
        given = headers.get(b"x-request-id")
        client_id = None
        if given is not None and _REQUEST_ID.match(decoded := given.decode("latin-1")):
            client_id = decoded
        edge = headers.get(b"x-redline-edge-id") if self.trust_edge_id else None
        if edge is not None and _EDGE_ID.match(edge):
            # nginx's $request_id: the same on every retry of this client request, so the
            # replica that answers last does not count it a second time.
            request_id = "edge-" + edge.decode()
        else:
            request_id = f"{self._id_prefix}{next(self._ids):x}"
        state = scope.setdefault("state", {})
        state["request_id"], state["client_request_id"] = request_id, client_id
        echoed = (client_id or request_id).encode()
        method = scope["method"]
        status = 500
        responding = False  # the response has begun: too late for an error answer
        metrics = self.state.metrics
        metrics.in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                status, responding = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", echoed)]
            await send(message)

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit():
                if int(declared) > self.max_body:
                    await self._too_large(send_wrapper)
                    return
                if b"transfer-encoding" not in headers:
                    # The body is exactly the declared length (the HTTP parser holds the
                    # client to it), within the limit: nothing to count.
                    await self.app(scope, receive, send_wrapper)
                    return
            await self.app(scope, self._limited(receive), send_wrapper)
        except Exception as exc:
            if responding:  # too late for an error answer: the connection is dropped
                raise
            answer = await error_answer(Request(scope), exc)
            await answer(scope, _no_receive, send_wrapper)
        finally:
            metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            matched = scope.get("route")
            route = getattr(matched, "path", None) or "unmatched"
            label = method_label(method, getattr(matched, "methods", None))
            metrics.observe_request(route, label, status, elapsed)
            self._log(scope, request_id, route, status, elapsed)

    def _limited(self, receive: Receive) -> Receive:
        """Count streamed body bytes; past the limit, reading fails with a 413 ``APIError``."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise APIError(413, self._too_large_message(), code="body_too_large")
            return message

        return limited

    def _too_large_message(self) -> str:
        return f"request body is larger than {self.max_body} bytes (REDLINE_MAX_BODY_BYTES)"

    async def _too_large(self, send: Send) -> None:
        response = error_response(413, self._too_large_message(), code="body_too_large")
        await response({"type": "http"}, _no_receive, send)

    def _log(self, scope: Scope, request_id: str, route: str, status: int, elapsed: float) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        state: dict[str, Any] = scope.get("state") or {}
        record = {
            "request_id": request_id,
            "client_request_id": state.get("client_request_id"),
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "cache": state.get("cache_result"),
            "client": state.get("client"),
        }
        logger.info(orjson.dumps(record).decode())


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
