"""Cached embedding: look every input up in the cache, compute only the misses through the
engine, store them, and report what happened (hit / miss / partial, stage timings).

Cache key = model name + version + output dimensions + SHA-256 of the normalised input
(Unicode NFC, surrounding whitespace stripped); the value is the float32 numpy vector.

The cache is used through ``state.request_cache`` (a
:class:`~redline.cache.request_path.RequestPathCache`): with a Redis cache a lookup waits at
most ``cache_read_budget_ms`` for Redis (what did not come in time is computed), and new
vectors are stored after the response, through a bounded queue. Cache failures are counted
and logged by its event log (a few lines per outage), never per request.

Example::

    result = await embed_texts(state, model, ["a", "b"], dimensions=None)
    result.vectors.shape, result.cache_result   # (2, 384), "miss"
"""

from __future__ import annotations

import functools
import hashlib
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from redline.cache.memory import MemoryCache
from redline.exceptions import CacheError, GatewayError, UpstreamRejected, UpstreamTimeout
from redline.serve import tracing
from redline.serve.cache_control import (
    current_policy,
    entry_ages,
    not_cached,
    stale_keys,
)
from redline.serve.errors import APIError
from redline.serve.model import Model
from redline.serve.state import ServerState
from redline.serve.token_input import TokenDecoder, decode_ids, is_ids

__all__ = [
    "CachingModel",
    "EmbedResult",
    "L1Hits",
    "cache_key",
    "embed_texts",
    "l1_hits",
    "normalize_text",
]


def normalize_text(text: str) -> str:
    """The form that is embedded and cached: NFC, surrounding whitespace stripped."""
    return unicodedata.normalize("NFC", text).strip()


def cache_key(model: Model, text: str, dimensions: int | None) -> str:
    """Cache key of one normalised input for *model* at *dimensions*."""
    return f"emb:{model.name}:{model.version}:{dimensions or model.dimension}:{_sha(text)}"


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Vectors (one row per input) and what it took to get them."""

    vectors: npt.NDArray[np.float32]
    cache_result: str  # "hit", "miss", "partial" or "off"
    cached_inputs: int
    cache_seconds: float
    queue_seconds: float
    inference_seconds: float
    age: float | None = None  # seconds since the oldest entry used was stored (max-age asked)
    hits: tuple[bool, ...] = ()  # per input: served from the cache (for usage's cached tokens)


def _project(vectors: npt.NDArray[np.float32], dimensions: int | None) -> npt.NDArray[np.float32]:
    """Truncate to *dimensions* and renormalise to unit length (OpenAI semantics)."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    projected: npt.NDArray[np.float32] = (cut / norms).astype(np.float32)
    return projected


@runtime_checkable
class CachingModel(Protocol):
    """A model that caches and computes on its own (an upstream's model in the gateway)."""

    async def embed_cached(self, texts: list[str], dimensions: int | None) -> EmbedResult: ...


async def embed_texts(
    state: ServerState,
    model: Model,
    texts: list[str],
    dimensions: int | None,
    *,
    offload: bool = False,
) -> EmbedResult:
    """Embed normalised *texts* through the cache and the engine (or the model's own
    ``embed_cached``; its ``GatewayError`` becomes a JSON error with the upstream's state);
    with *offload* (a large request) the inputs are hashed for the cache in ``state.offload``,
    not on the event loop."""
    if _caches_itself(type(model)):
        try:
            answer = await cast(CachingModel, model).embed_cached(texts, dimensions)
        except GatewayError as exc:
            raise APIError(exc.status, str(exc), code=_gateway_code(exc)) from exc
        if answer.cache_result != "off":
            state.metrics.observe_cache_lookup(answer.cache_seconds)
        return answer
    engine = state.require_engine(model)
    cache = state.request_cache
    policy = current_policy()
    decoder = _token_decoder(model, texts)
    width = dimensions or model.dimension
    cache_seconds = 0.0
    found: dict[str, Any] = {}
    keys: list[str] = []
    age: float | None = None
    if cache is not None:
        model_prefix = _key_prefix(policy.key_prefix(), model, width)
        if offload:
            keys = await state.offload.run(_keys, model_prefix, texts)
        else:
            keys = _keys(model_prefix, texts)
    if cache is not None and policy.reads:
        started = time.perf_counter()
        wanted = dict.fromkeys(keys)
        # The attributes only while tracing is on: this runs on every request.
        attributes = {"redline.cache.keys": len(wanted)} if tracing.is_enabled() else None
        with tracing.span("cache.lookup", attributes) as span:
            found = await cache.get_many(wanted)
            if policy.max_age is not None and found:
                try:
                    ages = await entry_ages(cache.cache, found, state.settings.cache_ttl)
                except CacheError as exc:
                    cache.events.failure("entry age", exc)
                    ages = {}  # of unknown age: computed again
                for key in stale_keys(found, ages, policy.max_age):
                    del found[key]
                age = max((ages[key] for key in found), default=0.0)
            span.set_attribute("redline.cache.hits", len(found))
            state.metrics.observe_cache_lookup(time.perf_counter() - started)
        cache_seconds += time.perf_counter() - started
    missing: dict[str, list[int]] = {}
    rows: list[Any] = []  # per input: its cached vector, or None
    cached = 0
    for index, text in enumerate(texts):
        hit = found.get(keys[index]) if found else None
        rows.append(hit)
        if hit is not None:
            cached += 1
        else:
            missing.setdefault(text, []).append(index)
    hits = tuple(row is not None for row in rows)
    if missing and policy.only_if_cached:
        raise not_cached(len(texts) - cached, len(texts))
    queue_s = inference_s = 0.0
    if not missing:
        out = _stacked(rows, width)  # every input from the cache
    else:
        out = np.empty((len(texts), width), dtype=np.float32)
        if cached:
            for index, row in enumerate(rows):
                if row is not None:
                    out[index] = row
        todo = list(missing)
        if decoder is not None:
            vectors, timing = await engine.embed([_decoded(decoder, text) for text in todo])
        else:
            vectors, timing = await engine.embed(todo)
        vectors = _project(vectors, dimensions)
        queue_s, inference_s = timing.queue, timing.inference
        fresh: dict[str, npt.NDArray[np.float32]] = {}
        for text, vector in zip(todo, vectors, strict=True):
            where = missing[text]
            for index in where:
                out[index] = vector
            if keys:
                fresh[keys[where[0]]] = vector
        if fresh and cache is not None and not policy.no_store:
            # Queued: stored after the response (see the module docstring).
            await cache.set_many(fresh, ttl=state.settings.cache_ttl or None)
    result = "off" if cache is None else policy.result(cached, len(texts) - cached)
    return EmbedResult(out, result, cached, cache_seconds, queue_s, inference_s, age, hits)


class L1Hits(NamedTuple):
    """Every input of a request found in the in-process tier: its key and value per input
    (as stored: read them, never change them), the ``X-Cache`` value and the seconds the
    lookup took."""

    keys: list[str]
    values: list[Any]
    cache_result: str
    cache_seconds: float


def l1_hits(
    state: ServerState, model: Model, texts: list[str], dimensions: int | None
) -> L1Hits | None:
    """What :func:`embed_texts` would answer from the cache when every one of *texts* is in
    its in-process tier (counted as the same hits, the lookup histogram observed once), read
    synchronously; ``None`` (nothing counted) for anything else: a miss, a cache with no
    in-process tier, a ``Cache-Control`` that reads otherwise (``no-cache``, ``max-age``),
    token-id inputs, a model that caches itself, tracing on (its spans are the general
    path's). The caller then takes the general path."""
    request_cache = state.request_cache
    if request_cache is None or tracing.is_enabled() or _caches_itself(type(model)):
        return None
    policy = current_policy()
    if policy.no_cache or policy.max_age is not None:
        return None
    l1 = _memory_tier(request_cache.cache)
    if l1 is None or any(is_ids(text) for text in texts):
        return None
    state.require_engine(model)  # 503 before the model is up, as the general path answers
    started = time.perf_counter()
    width = dimensions or model.dimension
    keys = _keys(_key_prefix(policy.key_prefix(), model, width), texts)
    values = l1.get_all_nowait(keys, shared=True)
    if values is None:
        return None
    seconds = time.perf_counter() - started
    state.metrics.observe_cache_lookup(seconds)
    return L1Hits(keys, values, policy.result(len(texts), 0), seconds)


def _memory_tier(cache: Any) -> MemoryCache | None:
    """The in-process tier of *cache* (itself, or a tiered cache's L1) if it is a
    :class:`MemoryCache`."""
    if isinstance(cache, MemoryCache):
        return cache
    # Imported here: the tiered cache brings redis-py, which a server without Redis never loads
    # (and a tiered cache in use has loaded it already).
    from redline.cache.tiered import TieredCache

    if isinstance(cache, TieredCache) and isinstance(cache.l1, MemoryCache):
        return cache.l1
    return None


def _token_decoder(model: Model, texts: list[str]) -> TokenDecoder | None:
    """The model as a decoder when *texts* hold token ids; 400 if it cannot decode them."""
    if not any(is_ids(text) for text in texts):
        return None
    if not isinstance(model, TokenDecoder):
        raise APIError(
            400,
            f"model {model.name!r} cannot take token ids; send strings",
            param="input",
            code="token_ids_unsupported",
        )
    return model


def _decoded(decoder: TokenDecoder, text: str) -> str:
    """The text of a token-id marker (other texts as they are)."""
    return decoder.decode_tokens(decode_ids(text)) if is_ids(text) else text


@functools.lru_cache(maxsize=64)
def _caches_itself(kind: type) -> bool:
    """Whether models of *kind* are :class:`CachingModel` (per type: isinstance on a runtime
    protocol costs tens of microseconds, more than a cached embedding may)."""
    return issubclass(kind, CachingModel)


def _gateway_code(exc: GatewayError) -> str:
    """The error ``code`` of a gateway failure."""
    if isinstance(exc, UpstreamTimeout):
        return "upstream_timeout"
    if isinstance(exc, UpstreamRejected):
        return "upstream_rejected"
    return "upstream_unavailable"


def _key_prefix(policy_prefix: str, model: Model, width: int) -> str:
    """What every :func:`cache_key` of *model* at *width* starts with, under a policy's
    (a tenant's) prefix."""
    return f"{policy_prefix}emb:{model.name}:{model.version}:{width}:"


def _keys(prefix: str, texts: list[str]) -> list[str]:
    """:func:`cache_key` of every text, the common *prefix* built once."""
    return [prefix + _hot_digest(text) for text in texts]


def _sha(text: str) -> str:
    """The hash part of *text*'s cache key."""
    return hashlib.sha256(text.encode()).hexdigest()[:40]


#: The hash part of a short input's cache key, remembered: hot inputs come back.
_digest = functools.lru_cache(maxsize=8192)(_sha)


def _hot_digest(text: str) -> str:
    """The hash part of *text*'s cache key (remembered for inputs of up to 512 characters)."""
    return _digest(text) if len(text) <= 512 else _sha(text)


def _stacked(rows: list[Any], width: int) -> npt.NDArray[np.float32]:
    """The cached vectors *rows* as one ``(len(rows), width)`` float32 array: a view of the
    one vector of a single-input request (entries are not written to), else a copy."""
    if len(rows) == 1:
        row = rows[0]
        if isinstance(row, np.ndarray) and row.dtype == np.float32 and row.shape == (width,):
            view: npt.NDArray[np.float32] = row.reshape(1, width)
            return view
    out = np.empty((len(rows), width), dtype=np.float32)
    for index, row in enumerate(rows):
        out[index] = row
    return out
