"""Helpers of the serve tests: settings, an app running over ASGI, a threaded uvicorn."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from redline.serve.app import create_app
from redline.serve.model import Model
from redline.serve.settings import Settings, load_settings
from redline.serve.state import ServerState
from tests._services import free_port, wait_for_port


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings: private data dir, memory cache unless overridden."""
    return load_settings(data_dir=tmp_path / "data", **overrides)


@asynccontextmanager
async def running_app(
    settings: Settings, model: Model | None = None, *, wait: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    """An app with its lifespan running and an httpx client talking ASGI to it."""
    app = create_app(settings, model=model)
    state: ServerState = app.state.redline
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        if wait:
            await state.wait_ready(timeout=60)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, state


class ThreadedServer:
    """A real uvicorn server on a free loopback port, run in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.app = app
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        wait_for_port(self.port, timeout=60)
        state: ServerState = self.app.state.redline
        for _ in range(600):
            if state.ready:
                break
            threading.Event().wait(0.1)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


async def usage_rows(state: ServerState, query: Any) -> list[tuple[Any, ...]]:
    """The usage table's rows for *query* (a SQLAlchemy select), the usage queue flushed first."""
    assert state.usage is not None
    assert state.database is not None
    await state.usage.flush()
    async with state.database.engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(query)).all()]


def request_count(metrics: str, route: str, status: str, method: str | None = None) -> float:
    """``redline_http_requests_total`` for *route* and *status* (and *method* when given) in a
    ``/metrics`` text, summed over the series that match."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "redline_http_requests_total"
        and sample.labels.get("route") == route
        and sample.labels.get("status") == status
        and (method is None or sample.labels.get("method") == method)
    )
