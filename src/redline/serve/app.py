"""``create_app(settings)``: the FastAPI application, built fresh per call (nothing global).

Example::

    app = create_app(load_settings(model="redline.serve.testing:create_hashing_model"))
    # uvicorn.run(app)  -- or `redline serve`

Pass *model* to serve an already-built model object (tests count its calls this way).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from redline.serve import tracing
from redline.serve.auth_failures import AuthFailureLimiter
from redline.serve.errors import install_error_handlers
from redline.serve.middleware import RequestMiddleware
from redline.serve.model import Model
from redline.serve.openapi import describe_openapi
from redline.serve.routes import embeddings, models, ops, predict, status
from redline.serve.routes.inference import InferenceRoute, InferenceRoutes
from redline.serve.settings import Settings, load_settings
from redline.serve.state import ServerState
from redline.serve.status_page import StatusReporter

__all__ = ["INFERENCE_ROUTES", "create_app", "create_app_from_env"]

#: Served ahead of FastAPI, without its per-request machinery (see ``routes.inference``).
INFERENCE_ROUTES: tuple[InferenceRoute, ...] = (embeddings.ROUTE, predict.ROUTE)


def create_app(settings: Settings | None = None, *, model: Model | None = None) -> FastAPI:
    """Build the app; the model loads in the lifespan (in a thread, then warmed up)."""
    settings = settings if settings is not None else load_settings()
    state = ServerState(settings, model=model)
    tracing.install_from_env()  # off (and free) unless OTEL_* variables ask for it

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.open()
        # On the cache's Redis client and breakers, as the rate limiter and usage stream are.
        auth_failures = AuthFailureLimiter.from_settings(settings, state.cache)
        app.state.auth_failures = auth_failures
        try:
            yield
        finally:
            await state.close()
            if auth_failures is not None:
                await auth_failures.close()
            await asyncio.to_thread(tracing.uninstall)  # flush the last spans

    app = _App(
        title="redline inference API",
        version="0.1.0",
        summary="OpenAI-compatible embeddings, cached and micro-batched.",
        lifespan=lifespan,
        # We export our own Prometheus metrics; FastAPI's OpenTelemetry hooks cost ~0.1 ms
        # per request for nothing here.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.redline = state
    app.state.auth_failures = None  # failed API-key attempts, per address: the lifespan opens it
    app.state.status_reporter = StatusReporter(state)  # windows of GET /status.json
    install_error_handlers(app)
    for router in (models.router, ops.router, status.router):
        app.include_router(router)
    # The last added is the outermost: the server span, the request middleware (id, size
    # limit, metrics, access log, the last-resort error answer), the inference routes, then
    # FastAPI's own exception middleware and router for every other route.
    app.add_middleware(InferenceRoutes, routes=INFERENCE_ROUTES)
    app.add_middleware(RequestMiddleware, state=state)
    app.add_middleware(tracing.wrap_server)
    return app


class _App(FastAPI):
    """FastAPI with an OpenAPI document that says what the server answers (``serve.openapi``)."""

    def openapi(self) -> dict[str, Any]:
        # Built per call (a few ms, rarely asked for): the limits in it depend on the model,
        # which loads after startup.
        return describe_openapi(super().openapi(), self.state.redline, INFERENCE_ROUTES)


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` / worker processes: settings from ``REDLINE_*``."""
    return create_app(load_settings())
