"""Fixtures of the serve tests: in-process apps over ASGI, a real uvicorn server in a thread,
the real all-MiniLM-L6-v2 model loaded once per session, and the tracing tests' span
collectors (an OTLP receiver; an in-memory exporter installed as the server's tracing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest

from redline.serve.app import create_app
from redline.serve.minilm import MiniLMModel, create_minilm_model
from redline.serve.settings import load_settings
from redline.serve.state import ServerState
from redline.serve.testing import HashingModel
from tests._services import PostgresServer
from tests.serve._helpers import ThreadedServer, make_settings, running_app

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.serve._otlp import Receiver


@pytest.fixture
def hashing_model() -> HashingModel:
    return HashingModel(dimension=32)


@pytest.fixture
async def hashing_client(
    tmp_path: Path, hashing_model: HashingModel
) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    """A ready app serving a 32-d HashingModel with a memory cache."""
    async with running_app(make_settings(tmp_path), hashing_model) as pair:
        yield pair


@pytest.fixture(scope="session")
def minilm() -> MiniLMModel:
    """The real model, loaded once for the whole session."""
    model = create_minilm_model()
    model.warmup()
    return model


@pytest.fixture(scope="session")
def minilm_server(
    minilm: MiniLMModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadedServer]:
    """A real uvicorn server (in a thread) serving the real model; shared by the session."""
    data = tmp_path_factory.mktemp("minilm-server")
    app = create_app(load_settings(data_dir=data), model=minilm)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP receiver on a free port, collecting the spans a server exports."""
    from tests.serve._otlp import otlp_receiver  # protobuf: only for the tests that trace

    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture
def in_memory() -> Iterator[InMemorySpanExporter]:
    """The OpenTelemetry SDK installed as redline's tracing, exporting to memory."""
    # Imported here: the serve tests that do not trace never load the SDK.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from redline.serve import tracing
    from redline.serve._tracing_sdk import SdkTracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(SdkTracing(provider))
    try:
        yield exporter
    finally:
        tracing.uninstall()


@pytest.fixture
async def fresh_postgres_db(postgres: PostgresServer) -> AsyncIterator[str]:
    """A new, empty database on the session's PostgreSQL; its SQLAlchemy URL."""
    name = f"db_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield postgres.dsn.replace("postgresql://", "postgresql+asyncpg://").replace(
            "/redline", f"/{name}"
        )
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
