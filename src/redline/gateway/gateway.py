"""The :class:`Gateway`: every configured upstream, the models they serve (by name and alias),
opened and closed with the server.

Opening asks each upstream without ``model=`` for its ``GET /v1/models``, and each model of
unknown dimension for one probe embedding; an upstream that cannot answer then is a
:class:`ConfigError` (give ``model=`` and ``dimension=`` to start without it).

Example::

    gateway = await Gateway.open(["tei=http://127.0.0.1:8080?model=bge&dimension=384"], cache=cache)
    gateway.resolve("bge")      # UpstreamModel('bge', ...)
    await gateway.close()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redline.cache.base import Cache
from redline.exceptions import ConfigError
from redline.gateway.client import CallFailed
from redline.gateway.config import UpstreamConfig, parse_upstream
from redline.gateway.model import UpstreamModel
from redline.gateway.observer import NO_OBSERVER, GatewayObserver
from redline.gateway.router import ModelRoute
from redline.gateway.tokens import estimate_tokens, load_counter
from redline.gateway.upstream import Upstream

__all__ = ["Gateway"]

logger = logging.getLogger(__name__)

DISCOVERY_TIMEOUT = 10.0


class Gateway:
    """Upstreams and their models; :meth:`resolve` maps a request's ``model`` to one."""

    def __init__(self, upstreams: Sequence[Upstream], models: dict[str, UpstreamModel]) -> None:
        self.upstreams = list(upstreams)
        self.models = models
        self._names: dict[str, UpstreamModel] = dict(models)
        for upstream in self.upstreams:
            for alias, target in upstream.config.aliases.items():
                if target in models:
                    self._names.setdefault(alias, models[target])

    @classmethod
    async def open(
        cls,
        specs: Sequence[str | UpstreamConfig],
        *,
        cache: Cache | None,
        cache_ttl: float | None = None,
        observer: GatewayObserver = NO_OBSERVER,
    ) -> Gateway:
        """Parse *specs*, open every upstream, learn their models; :class:`ConfigError` if not.
        *observer* hears of every upstream call and where each input came from."""
        configs = [parse_upstream(s) if isinstance(s, str) else s for s in specs]
        names = [config.name for config in configs]
        if len(set(names)) != len(names):
            raise ConfigError(f"upstream names must be distinct, got {names}")
        upstreams = [Upstream(config) for config in configs]
        try:
            for upstream in upstreams:
                await upstream.open()
                await _learn_models(upstream)
        except BaseException:
            for upstream in upstreams:
                await upstream.close()
            raise
        serving: dict[str, list[Upstream]] = {}
        for upstream in upstreams:
            for model in upstream.models:
                serving.setdefault(model, []).append(upstream)
        models: dict[str, UpstreamModel] = {}
        for model, group in serving.items():
            dimension = next(u.models[model] for u in group if u.models[model] is not None)
            named = next((u for u in group if u.config.tokenizer is not None), None)
            counter = (
                load_counter(named.config.tokenizer, named.token_caps.get(model))
                if named is not None
                else estimate_tokens
            )
            models[model] = UpstreamModel(
                model,
                ModelRoute(model, group, observer=observer),
                int(dimension or 0),
                cache=cache,
                cache_ttl=cache_ttl,
                max_inputs=min(u.config.max_inputs for u in group),
                max_tokens=min(u.config.max_tokens for u in group),
                concurrency=sum(u.config.concurrency for u in group),
                timeout=max(u.config.timeout for u in group),
                count=counter,
                observer=observer,
            )
        for upstream in upstreams:
            observer.upstream_state(upstream.name, ejected=False, ejection=False)
        logger.info("gateway: %s", {m: [u.name for u in g] for m, g in serving.items()})
        return cls(upstreams, models)

    def resolve(self, name: str) -> UpstreamModel | None:
        """The upstream model called (or aliased) *name*, or None."""
        return self._names.get(name)

    def model_ids(self) -> list[str]:
        """Every name a request may use for an upstream model (aliases included)."""
        return sorted(self._names)

    def states(self) -> dict[str, str]:
        """Each upstream's ejector state, for ``/ready``-style reports."""
        return {upstream.name: upstream.ejector.state() for upstream in self.upstreams}

    async def close(self) -> None:
        """Stop the dispatchers, then close every connection pool."""
        for model in self.models.values():
            await model.close()
        for upstream in self.upstreams:
            await upstream.close()

    def __repr__(self) -> str:
        return (
            f"Gateway(upstreams={[u.name for u in self.upstreams]}, models={sorted(self.models)})"
        )


async def _learn_models(upstream: Upstream) -> None:
    """Fill ``upstream.models`` (ids and dimensions) from its config, its list, a probe."""
    config = upstream.config
    try:
        if not upstream.models:
            listed = await upstream.client.list_models(timeout=DISCOVERY_TIMEOUT)
            if not listed:
                raise ConfigError(f"upstream {config.name!r} lists no models; give model=")
            upstream.models = {info.id: info.dimension for info in listed}
            upstream.token_caps = {
                info.id: info.max_input_tokens
                for info in listed
                if info.max_input_tokens is not None
            }
        elif config.dimension is not None:
            upstream.models = dict.fromkeys(upstream.models, config.dimension)
        for model, dimension in list(upstream.models.items()):
            if dimension is None:
                started = time.monotonic()
                reply = await upstream.client.embed(
                    model, ["dimension probe"], dimensions=None, timeout=DISCOVERY_TIMEOUT
                )
                upstream.models[model] = int(reply.vectors.shape[1])
                logger.info(
                    "upstream %s: %s has %d dimensions (probed in %.0f ms)",
                    config.name,
                    model,
                    reply.vectors.shape[1],
                    (time.monotonic() - started) * 1000,
                )
    except CallFailed as exc:
        raise ConfigError(
            f"upstream {config.name!r} ({config.base_url}) did not answer at start: {exc}; "
            "give model= and dimension= to start without asking it"
        ) from exc
