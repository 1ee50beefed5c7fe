"""Everything one server app owns (model, engine, cache, database, usage, limiter, metrics),
opened in the lifespan and closed on shutdown in reverse order.

The model loads in a background task (in a thread) so the server answers ``/health`` and a
503 ``/ready`` while it loads; ``ready`` turns true only after the warm-up batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from redline.cache.base import Cache
from redline.exceptions import ConfigError, ModelNotFound, ModelNotReady
from redline.serve.encoded_hits import EncodedHits
from redline.serve.engine import InferenceEngine
from redline.serve.looplag import LoopLagMonitor
from redline.serve.metrics import ServerMetrics
from redline.serve.model import Model, load_model
from redline.serve.offload import Offload
from redline.serve.settings import Settings

if TYPE_CHECKING:
    from redline.cache.request_path import RequestPathCache
    from redline.gateway import Gateway
    from redline.serve.database import Database
    from redline.serve.ratelimit import ClientRateLimiter
    from redline.serve.usage import UsageRecorder

__all__ = ["GIL_SWITCH_INTERVAL", "ServerState"]

#: While a server is open, a thread holding the GIL gives it up to a waiting thread (the event
#: loop) after this many seconds, not Python's default 5 ms: the loop's share of the GIL
#: bounds how late it runs anything while threads tokenise, encode or hash a large request.
GIL_SWITCH_INTERVAL = 0.0005

logger = logging.getLogger(__name__)


class ServerState:
    """The live parts of one app; ``app.state.redline``."""

    def __init__(self, settings: Settings, model: Model | None = None) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.model: Model | None = model
        self.engine: InferenceEngine | None = None
        self.cache: Cache | None = None
        # ``cache`` as the embeddings request path uses it (read budget, writes queued).
        self.request_cache: RequestPathCache | None = None
        self.database: Database | None = None
        self.usage: UsageRecorder | None = None
        self.limiter: ClientRateLimiter | None = None
        self.gateway: Gateway | None = None
        #: Every local model's engine by model name; ``model`` / ``engine`` are the default's.
        self.engines: dict[str, InferenceEngine] = {}
        self._local: dict[str, Model] = {}  # request ids (aliases included) -> local model
        self.ready = False
        self.load_error: str | None = None
        self.model_load_seconds: float | None = None
        self._loader: asyncio.Task[None] | None = None
        self._given_model = model
        self.loop_lag = LoopLagMonitor(self.metrics.loop_lag.observe)
        self._switch_interval: float | None = None
        self._froze_heap = False
        # A large request's decoding, tokenising and encoding (serve.routes._common).
        self.offload = Offload()
        #: The JSON of vectors answered from the in-process cache tier (serve.routes._hits).
        self.encoded_hits = EncodedHits()

    async def open(self) -> None:
        """Open cache and database, then start loading the model in the background."""
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, GIL_SWITCH_INTERVAL))
        self.loop_lag.start()
        from redline.serve.resources import (
            open_cache,
            open_database,
            open_gateway,
            open_limiter,
            open_usage,
        )

        self.cache = await open_cache(self.settings)
        if self.cache is not None:
            self.request_cache = _request_path(self.settings, self.cache)
        self.database = await open_database(self.settings)
        self.usage = await open_usage(self.settings, self.database, self.metrics, self.cache)
        self.limiter = await open_limiter(self.settings, self.cache)
        self.gateway = await open_gateway(self.settings, self.cache, self.database, self.metrics)
        self._loader = asyncio.create_task(self._load(), name="redline-model-loader")

    async def _load(self) -> None:
        """Load every local model (in a thread), warm each up, start its batcher, register
        it; then ready. Several models load one after the other, the default one first."""
        started = time.perf_counter()
        specs: tuple[str | None, ...] = (
            (None,) if self._given_model is not None else self.settings.model_specs
        )
        if not specs:
            self.ready = True  # a gateway only: upstream models need no loading
            logger.info("no local model: serving upstream models only")
            return
        spec: str | None = None
        try:
            for spec in specs:
                await self._load_one(spec)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("model %r failed to load", spec or self.settings.model)
            return
        self.model_load_seconds = time.perf_counter() - started
        self.metrics.model_load.set(self.model_load_seconds)
        _freeze_heap()
        self._froze_heap = True
        self.ready = True
        logger.info("models %s ready in %.2fs", list(self.engines), self.model_load_seconds)

    async def _load_one(self, spec: str | None) -> None:
        """Load the model *spec* names (None: the one given to the constructor) and start it."""
        model = self._given_model
        if model is None:
            assert spec is not None
            settings = self.settings
            model = await asyncio.to_thread(
                load_model,
                spec,
                torch_threads=settings.torch_threads,
                workers=settings.model_workers,
                runtime=settings.model_runtime,
                cache_dir=settings.model_cache_dir,
            )
        if model.name in self.engines:
            raise ConfigError(
                f"two local models are both named {model.name!r} (REDLINE_MODEL={spec!r}): "
                "their cache entries would mix; give each a distinct name"
            )
        warmup = getattr(model, "warmup", None)
        if callable(warmup):
            await asyncio.to_thread(warmup)
        engine = InferenceEngine(
            model,
            max_batch_size=self.settings.max_batch_size,
            max_wait=self.settings.max_wait_ms / 1000.0,
            max_queue=self.settings.max_queue,
            request_timeout=self.settings.request_timeout,
            on_batch=self.metrics.batch_observer(model.name),
        )
        await engine.start()
        self.engines[model.name] = engine
        for name in _ids_of(model):
            self._local.setdefault(name, model)
        if self.model is None or self.engine is None:  # the first is the default
            self.model, self.engine = model, engine
        if self.database is not None:
            await self.database.register_model(model)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the background load (tests and benchmarks use this)."""
        if self._loader is not None:
            await asyncio.wait_for(asyncio.shield(self._loader), timeout)
        if not self.ready:
            raise ModelNotReady(self.load_error or "model is not loaded")

    def require_engine(self, model: Model | None = None) -> InferenceEngine:
        """The running engine of *model* (default: the default model), or ``ModelNotReady``
        (503)."""
        engine = self.engine if model is None else self.engines.get(model.name)
        if not self.ready or engine is None:
            detail = f" ({self.load_error})" if self.load_error else ""
            raise ModelNotReady(f"model {self.settings.model!r} is not ready yet{detail}")
        return engine

    def model_ids(self) -> list[str]:
        """Names a request may use for the local models (the default model's first)."""
        return list(self._local)

    def resolve_model(self, requested: str | None) -> Model:
        """The local model called *requested* (None: the default one), else an upstream's
        model of that name or alias (gateway); else ModelNotFound."""
        if requested is not None:
            local = self._local.get(requested)
            if local is not None:
                return local
        gateway = self.gateway
        if gateway is not None and requested is not None:
            upstream = gateway.resolve(requested)
            if upstream is not None:
                return upstream
        if gateway is not None and not self.settings.model_specs and self._given_model is None:
            if requested is None and len(gateway.models) == 1:
                return next(iter(gateway.models.values()))
            raise ModelNotFound(
                f"model {requested!r} is not served here; allowed: {gateway.model_ids()}"
            )
        engine = self.require_engine()
        if requested is None:
            return engine.model
        allowed = self.model_ids() + (gateway.model_ids() if gateway is not None else [])
        raise ModelNotFound(f"model {requested!r} is not served here; allowed: {allowed}")

    async def close(self) -> None:
        """Drain the batcher, flush usage, close database and cache (reverse order of open)."""
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loader
        self.ready = False
        if self._froze_heap:
            gc.unfreeze()  # what this server held can be collected again once it is gone
            self._froze_heap = False
        await self.loop_lag.stop()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        for engine in self.engines.values():
            await _quietly(engine.close(drain=True), f"batcher of {engine.model.name}")
        self.offload.close()
        if self.usage is not None:
            await _quietly(self.usage.close(), "usage")
        if self.database is not None:
            await _quietly(self.database.close(), "database")
        if self.gateway is not None:
            await _quietly(self.gateway.close(), "gateway")
        if self.limiter is not None:
            await _quietly(self.limiter.close(), "rate limiter")
        if self.request_cache is not None:
            await _quietly(self.request_cache.close(), "cache writer")
        if self.cache is not None:
            await _quietly(self.cache.close(), "cache")

    def __repr__(self) -> str:
        model = self.model.name if self.model is not None else None
        return f"ServerState(model={model!r}, ready={self.ready}, cache={self.cache!r})"


def _freeze_heap() -> None:
    """Leave every object of the loaded server out of the garbage collector's later passes
    (``gc.freeze``), after collecting what is already garbage: a loaded server holds ~130k
    tracked objects (modules, the model's and the frameworks' objects) that every full
    collection walked again, ~2.5% of the CPU of cache hits under load."""
    gc.collect()
    gc.freeze()


def _request_path(settings: Settings, cache: Cache) -> RequestPathCache:
    """The request path's view of *cache*: with Redis behind it, reads within
    ``cache_read_budget_ms`` and writes queued (``cache_write_queue``); a cache in process
    never waits, so it is used as it is."""
    from redline.cache.request_path import RequestPathCache

    if not settings.redis_cache:
        return RequestPathCache(cache, read_budget=None, max_queued=0)
    budget = settings.cache_read_budget_ms / 1000 or None
    return RequestPathCache(cache, read_budget=budget, max_queued=settings.cache_write_queue)


def _ids_of(model: Model) -> list[str]:
    """The names a request may use for *model* (the bundled MiniLM has two more)."""
    names = [model.name]
    if model.name == "all-MiniLM-L6-v2":
        names += ["minilm", f"sentence-transformers/{model.name}"]
    return names


async def _quietly(closing: Any, what: str) -> None:
    """Await a close coroutine; log (not raise) failures so the rest still closes."""
    try:
        await closing
    except Exception:
        logger.exception("closing %s failed", what)
