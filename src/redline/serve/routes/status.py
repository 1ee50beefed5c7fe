"""The live status page: ``GET /status`` (HTML) and ``GET /status.json`` (what it shows).

The page itself is static (no figures in it); the figures come from ``/status.json``, which
needs an API key when ``REDLINE_METRICS_AUTH=true``, like ``/metrics``.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from redline._status_page import CONTENT_SECURITY_POLICY, render_status_page
from redline.serve.auth import authenticate
from redline.serve.routes._common import json_response, server_state
from redline.serve.status_page import StatusReporter

__all__ = ["REFRESH_SECONDS", "router"]

#: How often the page polls ``/status.json`` (``/status?refresh=S`` overrides it).
REFRESH_SECONDS = 2.0

router = APIRouter(tags=["operations"])
_NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "/status",
    response_class=HTMLResponse,
    responses={200: {"description": "A self-contained HTML page that polls /status.json."}},
)
async def status_page() -> Response:
    """Live status page: throughput, latency, cache, batches, queue (refreshes by itself)."""
    page = render_status_page(title="redline serve", source="status.json", refresh=REFRESH_SECONDS)
    headers = {**_NO_STORE, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return HTMLResponse(page, headers=headers)


@router.get(
    "/status.json",
    responses={
        200: {
            "description": "This process's figures over the last seconds (see the README).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def status_document(request: Request) -> Response:
    """What the status page shows (API key required when ``REDLINE_METRICS_AUTH=true``)."""
    state = server_state(request)
    if state.settings.metrics_auth:
        await authenticate(request)
    reporter: StatusReporter = request.app.state.status_reporter
    return json_response(reporter.document(), headers=_NO_STORE)
