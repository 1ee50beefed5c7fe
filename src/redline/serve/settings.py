"""Server settings: one typed, frozen value object read from ``REDLINE_*`` environment variables.

Example::

    settings = load_settings(port=8080, model="redline.serve.testing:create_hashing_model")
    settings.max_wait_ms        # 2.0 unless REDLINE_MAX_WAIT_MS says otherwise

Every setting (env var = ``REDLINE_`` + the upper-case name):

==================  ==================  ===================================================
name                default             meaning
==================  ==================  ===================================================
host                127.0.0.1           interface uvicorn binds
port                8000                TCP port (1..65535)
workers             1                   uvicorn worker processes
model               minilm              ``minilm`` (built-in) or ``package.module:factory``;
                                        several, comma-separated, serve side by side (the
                                        first answers requests that name no model);
                                        ``none``: no local model (a gateway only)
cache_url           memory://           ``memory://``, ``redis://...``, ``redis+cluster://...``
                                        (``?tiered=1`` for memory L1 + Redis L2); ``none`` = off
cache_ttl           86400               seconds an embedding stays cached (0 = no expiry)
cache_read_budget_ms 30                 Redis cache: most a request waits for Redis to
                                        answer a lookup; what comes later is computed (and
                                        fills L1 in the background); 0 = no limit
cache_write_queue   1024                Redis cache: new vectors waiting to be stored after
                                        their response; a fuller queue drops (and counts)
                                        them; 0 = store before answering
database_url        None                SQLAlchemy async URL; None = SQLite in ``data_dir``
data_dir            .redline            where the SQLite database lives
max_batch_size      32                  most inputs one model call sees
max_wait_ms         2                   longest an input waits for its batch to fill
max_queue           1024                queued inputs before requests get 429
max_inputs          256                 inputs per request
max_chars           8192                characters per input
max_body_bytes      2097152             request body size (413 above)
truncate            false               cut over-long inputs to max_chars instead of 413
api_keys            (none)              comma-separated bearer keys; empty = no auth
rate_limit          None                per-client limit like ``100/s``, ``600/min``, ``1000/h``
model_workers       None                built-in model: forward passes run side by side, each
                                        with its own tokenizer (None = 2 on >= 2 CPUs, else 1)
torch_threads       None                intra-op threads per model worker (None = the CPUs
                                        divided among the model workers)
model_runtime       onnx                built-in model: ``onnx`` (fp32 graph run by ONNX
                                        Runtime), ``onnx-int8`` (int8 weights: faster, vectors
                                        close to fp32's, see the README) or ``torch`` (the
                                        SentenceTransformer as it ships)
model_cache_dir     None                where exported ONNX graphs are kept (None =
                                        ``$XDG_CACHE_HOME/redline/models``)
log_level           info                debug, info, warning, error, critical
metrics_auth        false               /metrics requires an API key too
ready_queue_ratio   0.9                 /ready fails when the queue is fuller than this
usage_queue         auto                where usage records wait for the database: ``redis``
                                        (a Redis Stream on the cache's Redis or Cluster;
                                        survives a crash), ``memory`` (in process; a crash
                                        loses what waits), ``auto`` (redis when the cache URL
                                        is a Redis one, else memory)
usage_stream        None                the stream's key; None = ``redline:usage:`` + a hash
                                        of the database URL (and, for SQLite, the host name):
                                        servers share a stream exactly when they share a
                                        database
usage_claim_idle    30                  seconds after which a live server takes over the
                                        stream entries another server read and never wrote
request_timeout     30                  seconds a request may wait for the model (queue +
                                        forward pass); then 504 with Retry-After
trust_edge_id       false               key usage rows by the X-Redline-Edge-Id header that
                                        the cluster's nginx sets (one id per client request,
                                        the same on every retry), so a request nginx retried
                                        on another replica is counted once; only behind a
                                        proxy that always sets it (``redline cluster`` does)
header_timeout      10                  seconds a client has to send a request's line and
                                        headers (from connect, or from its first byte on a
                                        kept-alive connection); then 408 and close
body_timeout        30                  seconds a client has to send a request's body once
                                        its headers are in; then 408 (or close) and close
auth_failure_limit  10/min              wrong API keys per client address (same syntax as
                                        rate_limit); past it every request from
                                        that address that needs a key gets 429 with
                                        Retry-After until the budget refills; ``off``
upstreams           (none)              gateway: ``NAME=URL[?options]`` per upstream
                                        embeddings API, comma- or space-separated (see
                                        ``redline.gateway.config``); their models are served
                                        beside the local one
cache_tenants       (none)              per-client cache rules ``CLIENT?namespace=NAME&
                                        allow=no-cache+max-age`` (see
                                        ``redline.serve.cache_control``), comma-separated
==================  ==================  ===================================================
"""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from redline.exceptions import ConfigError

__all__ = ["Settings", "check_startup", "load_settings", "parse_rate_limit"]

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNIT_SECONDS |= {"h": 3600.0, "hour": 3600.0}


def parse_rate_limit(spec: str) -> tuple[float, float]:
    """Parse ``"100/s"``, ``"600/min"``, ``"10/5s"`` into ``(rate, per_seconds)``.

    >>> parse_rate_limit("600/min")
    (600.0, 60.0)
    """
    match = _RATE_RE.match(spec)
    if match is None:
        raise ValueError(f"rate limit must look like '100/s', '600/min' or '1000/h', got {spec!r}")
    rate = float(match.group(1))
    multiple = float(match.group(2)) if match.group(2) else 1.0
    if rate <= 0 or multiple <= 0:
        raise ValueError(f"rate limit must be positive, got {spec!r}")
    return rate, multiple * _UNIT_SECONDS[match.group(3)]


class Settings(BaseSettings):
    """Typed server settings; see the module docstring for the table of every field."""

    model_config = SettingsConfigDict(env_prefix="REDLINE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    model: str = "minilm"
    cache_url: str = "memory://"
    cache_ttl: float = Field(default=86400.0, ge=0)
    cache_read_budget_ms: float = Field(default=30.0, ge=0, le=60_000)
    cache_write_queue: int = Field(default=1024, ge=0, le=1_000_000)
    database_url: str | None = None
    data_dir: Path = Path(".redline")
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0, le=10_000)
    max_queue: int = Field(default=1024, ge=1)
    max_inputs: int = Field(default=256, ge=1)
    max_chars: int = Field(default=8192, ge=1)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=64)
    truncate: bool = False
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    rate_limit: str | None = None
    model_workers: int | None = Field(default=None, ge=1, le=64)
    torch_threads: int | None = Field(default=None, ge=1, le=256)
    model_runtime: Literal["onnx", "onnx-int8", "torch"] = "onnx"
    model_cache_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    metrics_auth: bool = False
    ready_queue_ratio: float = Field(default=0.9, gt=0, le=1)
    usage_queue: Literal["auto", "redis", "memory"] = "auto"
    usage_stream: str | None = Field(default=None, min_length=1, max_length=200)
    usage_claim_idle: float = Field(default=30.0, gt=0, le=86400)
    # Abuse resistance: slow clients are cut, failed authentication is throttled.
    request_timeout: float = Field(default=30.0, gt=0, le=3600)
    trust_edge_id: bool = False
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    auth_failure_limit: str | None = "10/min"
    upstreams: Annotated[tuple[str, ...], NoDecode] = ()
    cache_tenants: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("upstreams", mode="before")
    @classmethod
    def _split_upstreams(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if isinstance(value, list | tuple):
            if not value:
                return ()  # no upstreams: the gateway is not imported
            from redline.gateway.config import parse_upstream

            for spec in value:
                parse_upstream(spec)  # ConfigError (a ValueError) names the bad part
            return tuple(value)
        return value

    @field_validator("cache_tenants", mode="before")
    @classmethod
    def _split_tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if isinstance(value, list | tuple):
            from redline.serve.cache_control import tenant_rules

            tenant_rules(tuple(value))  # ValueError names the bad rule
            return tuple(value)
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in ("", "none", "off"):
            return None
        if value is not None:
            parse_rate_limit(value)
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _check_model(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = ",".join(str(part) for part in value)
        if not isinstance(value, str):
            return value
        specs = [part.strip() for part in value.split(",") if part.strip()]
        if not specs:
            raise ValueError("model must name at least one model (or 'none')")
        for spec in specs:
            if spec not in ("minilm", "none") and spec.count(":") != 1:
                raise ValueError(
                    "model must be 'minilm' or 'package.module:factory' ('none': upstreams "
                    f"only), comma-separated for several; got {spec!r}"
                )
        if "none" in specs and len(specs) > 1:
            raise ValueError(f"model 'none' cannot be combined with other models, got {value!r}")
        if len(set(specs)) != len(specs):
            raise ValueError(f"model names the same model twice: {value!r}")
        return ",".join(specs)

    @property
    def model_specs(self) -> tuple[str, ...]:
        """The local models to load, in order (empty for ``none``); the first is the default."""
        return () if self.model == "none" else tuple(self.model.split(","))

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def cache_enabled(self) -> bool:
        """False when ``cache_url`` is ``none`` (or empty)."""
        return self.cache_url.strip().lower() not in ("", "none", "off")

    @model_validator(mode="after")
    def _check_usage_queue(self) -> Settings:
        if self.usage_queue == "redis" and not self.redis_cache:
            raise ValueError(
                "REDLINE_USAGE_QUEUE=redis keeps usage in a stream on the cache's Redis, but "
                f"REDLINE_CACHE_URL={self.cache_url!r} is not a Redis or Redis Cluster URL"
            )
        return self

    @property
    def redis_cache(self) -> bool:
        """True when ``cache_url`` names Redis or Redis Cluster (tiered or not)."""
        scheme = self.cache_url.strip().partition("://")[0].lower()
        return scheme.removeprefix("tiered+").startswith("redis")

    @property
    def durable_usage(self) -> bool:
        """True when usage records go through a Redis stream (see ``usage_queue``)."""
        return self.usage_queue == "redis" or (self.usage_queue == "auto" and self.redis_cache)

    @property
    def resolved_usage_stream(self) -> str:
        """``usage_stream``, or a key derived from the database (see the table above)."""
        if self.usage_stream:
            return self.usage_stream
        where = self.resolved_database_url
        if where.startswith("sqlite"):
            where += "@" + socket.gethostname()
        return "redline:usage:" + hashlib.sha256(where.encode()).hexdigest()[:16]

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, or the SQLite file in ``data_dir`` (aiosqlite driver)."""
        if self.database_url:
            url = self.database_url
            if url.startswith(("postgresql://", "postgres://")):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'redline.db').resolve()}"

    def __repr__(self) -> str:
        keys = f"{len(self.api_keys)} keys" if self.api_keys else "off"
        return (
            f"Settings(host={self.host!r}, port={self.port}, workers={self.workers}, "
            f"model={self.model!r}, cache_url={self.cache_url!r}, auth={keys})"
        )


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with *overrides* (None values ignored) on top.

    Raises :class:`ConfigError` with a one-line message naming the bad setting.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc


def check_startup(settings: Settings) -> None:
    """Fail fast, before serving, on a cache URL, database URL or model module that cannot work.

    Raises :class:`ConfigError` with one line. Nothing connects: the cache client is built and
    dropped, the database URL is only parsed, the model module is only located.
    """
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from redline.serve.model import BUILTIN_MODELS

    if settings.cache_enabled:
        from redline.cache.url import cache_from_url

        cache_from_url(settings.cache_url)  # raises ConfigError naming the problem
    try:
        make_url(settings.resolved_database_url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid setting REDLINE_DATABASE_URL: {exc}") from exc
    if settings.upstreams:
        from redline.gateway.config import parse_upstream

        for spec in settings.upstreams:
            parse_upstream(spec).api_key()  # ConfigError when its key_env variable is unset
    if settings.model == "none":
        if not settings.upstreams:
            raise ConfigError("REDLINE_MODEL=none serves nothing without REDLINE_UPSTREAMS")
        return
    for spec in settings.model_specs:
        module = BUILTIN_MODELS.get(spec, spec).partition(":")[0]
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ConfigError(f"invalid setting REDLINE_MODEL: cannot find module {module!r}")


def _one_line(exc: ValidationError) -> str:
    """Condense pydantic's report into ``REDLINE_PORT=70000: Input should be ...``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(loc) for loc in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        shown = f"={value!r}" if not isinstance(value, dict) else ""
        parts.append(f"REDLINE_{field.upper()}{shown}: {message}")
    return "invalid setting " + "; ".join(parts)
