"""An upstream's model as the server sees it: :class:`UpstreamModel` has the ``Model``
attributes (``name``, ``version``, ``dimension``) and answers ``embed_cached``, the server's
hook for models that do their own caching and calling.

Per input: look the cache up (key = upstream model + dimensions + SHA-256 of the normalised
input), send only the misses (coalesced and batched by a :class:`Dispatcher`), and store each
fresh vector once as float32 with its token count as one extra element, so a later hit
reports the same ``usage`` the upstream did. Duplicates within a request are sent once and
each position gets its vector; the response is built in the request's order.

Example::

    model = UpstreamModel("bge", route, 384, cache=cache)
    result = await model.embed_cached(["a", "b", "a"], None)
    result.vectors.shape, model.count_tokens(["a", "b", "a"])   # (3, 384), [1, 1, 1]
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from redline.cache.base import Cache
from redline.exceptions import CacheError
from redline.gateway.dispatcher import Dispatcher, Row
from redline.gateway.observer import NO_OBSERVER, GatewayObserver
from redline.gateway.router import ModelRoute
from redline.gateway.tokens import estimate_tokens
from redline.serve.cache_control import current_policy, entry_ages, not_cached, stale_keys
from redline.serve.embedder import EmbedResult

__all__ = ["UpstreamModel", "gateway_cache_key"]

logger = logging.getLogger(__name__)

_TOKEN_MEMO = 65536


def gateway_cache_key(model: str, text: str, dimensions: int | None) -> str:
    """Cache key of one normalised input of an upstream model at *dimensions*."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:40]
    return f"gw:{model}:{dimensions or 'full'}:{digest}"


class UpstreamModel:
    """One model served by one or more upstreams (see the module docstring)."""

    version = "upstream"
    max_input_tokens: int | None = None

    def __init__(
        self,
        name: str,
        route: ModelRoute,
        dimension: int,
        *,
        cache: Cache | None,
        cache_ttl: float | None = None,
        max_inputs: int = 32,
        max_tokens: int = 16384,
        concurrency: int = 8,
        timeout: float = 30.0,
        count: Callable[[str], int] = estimate_tokens,
        timer: Any = time.monotonic,
        observer: GatewayObserver = NO_OBSERVER,
    ) -> None:
        self.name = name
        self.route = route
        self.dimension = dimension
        self.cache = cache
        self.cache_ttl = cache_ttl or None
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.timeout = timeout
        self.count = count
        self._timer = timer
        self.observer = observer
        self._dispatchers: dict[tuple[int | None, str | None], Dispatcher] = {}
        self._starting = asyncio.Lock()
        # hash(text) -> tokens billed; keyed by hash so long inputs are not kept alive
        self._tokens: OrderedDict[int, int] = OrderedDict()

    def batch(self, inputs: list[str]) -> npt.NDArray[np.float32]:
        """Not used: the server calls :meth:`embed_cached` for this model."""
        raise TypeError(f"{self.name!r} is served by an upstream; use embed_cached")

    def count_tokens(self, texts: list[str]) -> list[int]:
        """What the upstream billed for each text (remembered from the last embed)."""
        memo = self._tokens
        return [memo.get(hash(text)) or self.count(text) for text in texts]

    async def dispatcher(self, dimensions: int | None, namespace: str | None = None) -> Dispatcher:
        """The dispatcher for *dimensions* in *namespace* (one per pair, started on first
        use: tenants in different namespaces share neither entries nor calls in flight)."""
        key = (dimensions, namespace)
        found = self._dispatchers.get(key)
        if found is not None:
            return found
        async with self._starting:
            found = self._dispatchers.get(key)
            if found is None:
                found = Dispatcher(
                    self.route,
                    dimensions,
                    store=self._store_for(dimensions, namespace),
                    max_inputs=self.max_inputs,
                    max_tokens=self.max_tokens,
                    concurrency=self.concurrency,
                    call_timeout=self.timeout,
                    count=self.count,
                    timer=self._timer,
                    observer=self.observer,
                )
                await found.start()
                self._dispatchers[key] = found
        return found

    async def embed_cached(self, texts: list[str], dimensions: int | None) -> EmbedResult:
        """Vectors for normalised *texts*, cached per input; raises ``GatewayError``."""
        started = self._timer()
        deadline = started + self.timeout
        policy = current_policy()
        prefix = policy.key_prefix()
        keys = [prefix + gateway_cache_key(self.name, text, dimensions) for text in texts]
        found: dict[str, Any] = {}
        age: float | None = None
        if self.cache is not None and policy.reads:
            try:
                found = await self.cache.get_many(set(keys))
                if policy.max_age is not None and found:
                    ages = await entry_ages(self.cache, found, self.cache_ttl)
                    for key in stale_keys(found, ages, policy.max_age):
                        del found[key]
                    age = max((ages[key] for key in found), default=0.0)
            except CacheError as exc:
                logger.warning("cache read failed, asking the upstream: %s", exc)
                found = {}
        cache_seconds = self._timer() - started
        rows: dict[str, Row] = {}
        missing: list[str] = []
        for text, key in zip(texts, keys, strict=True):
            entry = found.get(key)
            if entry is not None:
                array = np.asarray(entry, dtype=np.float32)
                rows[text] = Row(array[:-1], int(array[-1]))
            elif text not in rows:
                missing.append(text)
        absent = set(missing)
        cached = sum(1 for text in texts if text not in absent)
        if missing and policy.only_if_cached:
            raise not_cached(len(texts) - cached, len(texts))
        fetch_seconds = 0.0
        unique = list(dict.fromkeys(missing)) if missing else missing
        # Cached positions, and misses repeated within the request (sent once): the
        # dispatcher reports the rest.
        self.observer.inputs(self.name, cached=cached, coalesced=len(missing) - len(unique), sent=0)
        if missing:
            fetched = self._timer()
            dispatcher = await self.dispatcher(dimensions, policy.namespace)
            store = self.cache is not None and not policy.no_store
            rows.update(
                await dispatcher.embed(
                    unique,
                    deadline=deadline,
                    store=store,
                    max_age=0.0 if policy.no_cache else policy.max_age,
                )
            )
            fetch_seconds = self._timer() - fetched
        width = len(next(iter(rows.values())).vector) if rows else dimensions or self.dimension
        out = np.empty((len(texts), width), dtype=np.float32)
        memo = self._tokens
        for index, text in enumerate(texts):
            row = rows[text]
            out[index] = row.vector
            hashed = hash(text)
            memo[hashed] = row.tokens
            memo.move_to_end(hashed)
        while len(memo) > _TOKEN_MEMO:
            memo.popitem(last=False)
        result = "off" if self.cache is None else policy.result(cached, len(texts) - cached)
        hits = tuple(text not in absent for text in texts)
        return EmbedResult(out, result, cached, cache_seconds, 0.0, fetch_seconds, age, hits)

    def _store_for(self, dimensions: int | None, namespace: str | None) -> Any:
        """The dispatcher's store callback: each row once, float32, tokens as the last element."""
        prefix = f"ns:{namespace}:" if namespace else ""

        async def store(rows: dict[str, Row]) -> None:
            if self.cache is None:
                return
            entries = {
                prefix + gateway_cache_key(self.name, text, dimensions): np.append(
                    row.vector, np.float32(row.tokens)
                ).astype(np.float32)
                for text, row in rows.items()
            }
            try:
                await self.cache.set_many(entries, ttl=self.cache_ttl)
            except CacheError as exc:
                logger.warning("cache write failed: %s", exc)

        return store

    def upstream_counts(self) -> tuple[int, int]:
        """(calls, inputs) sent upstream so far, over every dimensions value."""
        calls = sum(d.upstream_calls for d in self._dispatchers.values())
        inputs = sum(d.upstream_inputs for d in self._dispatchers.values())
        return calls, inputs

    async def close(self) -> None:
        """Stop every dispatcher."""
        for dispatcher in self._dispatchers.values():
            await dispatcher.close()
        self._dispatchers.clear()

    def __repr__(self) -> str:
        return f"UpstreamModel({self.name!r}, dimension={self.dimension}, route={self.route!r})"
