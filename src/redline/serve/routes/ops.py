"""Operations endpoints: ``/health`` (liveness), ``/ready`` (readiness), ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from redline.serve.auth import authenticate
from redline.serve.routes._common import json_response, server_state
from redline.serve.schemas import HealthResponse, ReadyResponse
from redline.serve.state import ServerState

__all__ = ["readiness", "router"]

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthResponse)
async def health() -> Response:
    """Liveness: the event loop answers."""
    return json_response({"status": "ok"})


async def readiness(state: ServerState) -> tuple[bool, dict[str, Any]]:
    """(ready?, checks): model warm, batch worker alive, queue below the threshold.

    The cache and the database are reported but do not gate readiness: a Redis outage makes
    the cache check ``degraded`` while the server keeps answering from the model.
    """
    checks: dict[str, Any] = {}
    ok = True
    if state.ready:
        checks["model"] = "ok"
    else:
        checks["model"] = f"failed: {state.load_error}" if state.load_error else "loading"
        ok = False
    if state.engine is None and state.settings.model == "none":
        checks["batcher"] = "none (no local model)"
    elif state.engine is None:
        checks["batcher"] = "not started"
        ok = False
    else:
        checks["batcher"] = "ok"
        # Every local model's batcher (the default model's first): one down is not ready.
        for engine in state.engines.values() or [state.engine]:
            health = engine.health()
            limit = state.settings.ready_queue_ratio * health["max_queue"]
            where = f" ({engine.model.name})" if len(state.engines) > 1 else ""
            if not health["alive"]:
                checks["batcher"] = f"dead{where}: {health.get('last_error')}"
                ok = False
                break
            if health["queue_depth"] >= limit:
                depth = f"{health['queue_depth']}/{health['max_queue']}"
                checks["batcher"] = f"saturated{where}: queue {depth}"
                ok = False
                break
    if state.gateway is not None:  # reported, not gating: cached inputs are still served
        checks["upstreams"] = state.gateway.states()
    checks["cache"] = await _cache_check(state)
    if state.database is None:
        checks["database"] = "off"
    else:
        checks["database"] = "ok" if await state.database.ping() else "degraded"
    return ok, checks


async def _cache_check(state: ServerState) -> str:
    if state.cache is None:
        return "off"
    try:
        report = await state.cache.health()
    except Exception as exc:
        return f"degraded: {type(exc).__name__}"
    status = str(report.get("status", "ok")) if isinstance(report, dict) else "ok"
    healthy = status in ("ok", "healthy", "up") and report.get("ok", True) is not False
    return "ok" if healthy else "degraded"


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Not ready; the checks say why."}},
)
async def ready(request: Request) -> Response:
    """200 when the server can take traffic, else 503; the JSON body has every check."""
    ok, checks = await readiness(server_state(request))
    body = {"status": "ready" if ok else "unavailable", "checks": checks}
    return json_response(body, status=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def metrics(request: Request) -> Response:
    """Prometheus exposition (API key required when ``REDLINE_METRICS_AUTH=true``)."""
    state = server_state(request)
    if state.settings.metrics_auth:
        await authenticate(request)
    for name, engine in state.engines.items():  # every local model's queue, by name
        health = engine.health()
        state.metrics.observe_queue(name, health["queue_depth"], health["max_queue"])
    cache = state.request_cache or state.cache  # the former adds its own tier's events
    if cache is not None:
        state.metrics.sync_cache(cache.stats())
    # Rendered in a thread (not the offload threads: a scrape must not wait behind a large
    # request's work): the exposition is milliseconds of Python (3-11 ms on a loaded box),
    # which on the loop would hold up every request in flight.
    accept = request.headers.get("accept", "")
    body, content_type = await asyncio.to_thread(state.metrics.render, accept)
    return Response(body, media_type=content_type)
