"""``create_app(settings)``: the FastAPI application, built fresh per call (nothing global).

Example::

    app = create_app(load_settings(model="redline.serve.testing:create_hashing_model"))
    # uvicorn.run(app)  -- or `redline serve`

Pass *model* to serve an already-built model object (tests count its calls this way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from redline.serve.errors import install_error_handlers
from redline.serve.middleware import RequestMiddleware
from redline.serve.model import Model
from redline.serve.routes import embeddings, models, ops, predict
from redline.serve.settings import Settings, load_settings
from redline.serve.state import ServerState

__all__ = ["create_app", "create_app_from_env"]


def create_app(settings: Settings | None = None, *, model: Model | None = None) -> FastAPI:
    """Build the app; the model loads in the lifespan (in a thread, then warmed up)."""
    settings = settings if settings is not None else load_settings()
    state = ServerState(settings, model=model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.open()
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="redline inference API",
        version="0.1.0",
        summary="OpenAI-compatible embeddings, cached and micro-batched.",
        lifespan=lifespan,
        # We export our own Prometheus metrics; FastAPI's OpenTelemetry hooks cost ~0.1 ms
        # per request for nothing here.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.redline = state
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, state=state)
    for router in (embeddings.router, predict.router, models.router, ops.router):
        app.include_router(router)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` / worker processes: settings from ``REDLINE_*``."""
    return create_app(load_settings())
