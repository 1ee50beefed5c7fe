"""``redline serve``: run the inference API with uvicorn (flags override ``REDLINE_*`` env)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated, Any, cast

import typer

__all__ = ["register"]

logger = logging.getLogger(__name__)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [REDLINE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port [REDLINE_PORT].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [REDLINE_WORKERS].")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="'minilm', 'package.module:factory' or 'none'; repeatable: several models "
            "side by side, the first is the default [REDLINE_MODEL, comma-separated]."
        ),
    ] = None,
    cache_url: Annotated[
        str | None, typer.Option(help="memory://, redis://..., none [REDLINE_CACHE_URL].")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL; default SQLite [REDLINE_DATABASE_URL].")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="SQLite dir [REDLINE_DATA_DIR].")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Inputs per model call [REDLINE_MAX_BATCH_SIZE].")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="Batch fill wait in ms [REDLINE_MAX_WAIT_MS].")
    ] = None,
    max_queue: Annotated[
        int | None, typer.Option(help="Queued inputs before 429 [REDLINE_MAX_QUEUE].")
    ] = None,
    api_keys: Annotated[
        str | None, typer.Option(help="Comma-separated bearer keys [REDLINE_API_KEYS].")
    ] = None,
    rate_limit: Annotated[
        str | None, typer.Option(help="Per-client limit, e.g. 100/s [REDLINE_RATE_LIMIT].")
    ] = None,
    model_workers: Annotated[
        int | None,
        typer.Option(help="Built-in model: parallel forward passes [REDLINE_MODEL_WORKERS]."),
    ] = None,
    torch_threads: Annotated[
        int | None,
        typer.Option(help="Intra-op threads per model worker [REDLINE_TORCH_THREADS]."),
    ] = None,
    model_runtime: Annotated[
        str | None,
        typer.Option(help="Built-in model: onnx|onnx-int8|torch [REDLINE_MODEL_RUNTIME]."),
    ] = None,
    model_cache_dir: Annotated[
        Path | None,
        typer.Option(help="Exported ONNX graphs kept here [REDLINE_MODEL_CACHE_DIR]."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug|info|warning|error [REDLINE_LOG_LEVEL].")
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a request may wait for the model [REDLINE_REQUEST_TIMEOUT]."),
    ] = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to receive a request's headers [REDLINE_HEADER_TIMEOUT]."),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to receive a request's body [REDLINE_BODY_TIMEOUT]."),
    ] = None,
    auth_failure_limit: Annotated[
        str | None,
        typer.Option(
            help="Failed API-key attempts per client address, e.g. 10/min, or off "
            "[REDLINE_AUTH_FAILURE_LIMIT]."
        ),
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="Gateway: NAME=URL[?model=M&key_env=VAR...] of an OpenAI-compatible "
            "embeddings API; repeatable [REDLINE_UPSTREAMS]."
        ),
    ] = None,
) -> None:
    """Serve the embeddings API (OpenAI-compatible) with caching and micro-batching."""
    from redline.exceptions import ConfigError
    from redline.serve.settings import check_startup, load_settings

    flags = {
        "host": host,
        "port": port,
        "workers": workers,
        "model": ",".join(model) if model else None,
        "cache_url": cache_url,
        "database_url": database_url,
        "data_dir": data_dir,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "max_queue": max_queue,
        "api_keys": api_keys,
        "rate_limit": rate_limit,
        "model_workers": model_workers,
        "torch_threads": torch_threads,
        "model_runtime": model_runtime,
        "model_cache_dir": model_cache_dir,
        "log_level": log_level,
        "request_timeout": request_timeout,
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "auth_failure_limit": auth_failure_limit,
        "upstreams": tuple(upstream) if upstream else None,
    }
    try:
        settings = load_settings(**flags)
        check_startup(settings)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None
    # Worker processes rebuild the settings from the environment: hand the flags over there.
    for name, value in flags.items():
        if value is not None:
            os.environ[f"REDLINE_{name.upper()}"] = _env_value(value)
    metrics_dir: str | None = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several workers: /metrics must aggregate every process's values.
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="redline-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # The server already runs tokenizers in several threads (model workers, offload); their
    # own thread pool on top takes the cores from the event loop (a maximal request's token
    # count: 1.1-2.1% of loop-lag samples over 5 ms with it, 0.6-1.5% without, quiet box).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _configure_logging(settings.log_level)

    import uvicorn

    from redline.serve.protocol import guarded_http_protocol

    try:
        uvicorn.run(
            "redline.serve.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=30,
            log_config=None,
            # One send per response and deadlines on slow clients: see serve/protocol.py.
            # uvicorn calls the factory as it would a protocol class.
            http=cast(
                "type[asyncio.Protocol]",
                guarded_http_protocol(settings.header_timeout, settings.body_timeout),
            ),
        )
    finally:
        if metrics_dir is not None:  # ours, not one the caller named: remove it
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def _configure_logging(level: str) -> None:
    """One line per record on stderr; the access log lines are already JSON.

    The line names no source file, thread or process, so records do not look them up (the
    switches the logging HOWTO's "Optimization" section gives): at ``info`` every request
    logs a line, and the look-ups were ~40% of a line's cost (14 -> 9 us)."""
    logging._srcfile = None  # no caller look-up (a stack walk per record)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def register(app: typer.Typer) -> None:
    """Add ``redline serve`` to the root app."""
    app.command("serve")(serve)
