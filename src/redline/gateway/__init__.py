"""redline as a gateway in front of OpenAI-compatible embeddings APIs: a per-input cache,
coalescing of identical inputs in flight, batching within each upstream's limits, retries
with backoff, outlier ejection and failover between upstreams serving the same model.

Example::

    # redline serve --upstream tei=http://127.0.0.1:8080?model=bge-small
    gateway = await Gateway.open(["tei=http://127.0.0.1:8080?model=bge-small"], cache=cache)
    model = gateway.resolve("bge-small")
    result = await model.embed_cached(["hello"], None)
"""

from __future__ import annotations

from redline._lazy import lazy_exports as _lazy_exports
from redline.gateway.config import UpstreamConfig as UpstreamConfig
from redline.gateway.config import parse_upstream as parse_upstream
from redline.gateway.ejector import EjectorStats as EjectorStats
from redline.gateway.ejector import OutlierEjector as OutlierEjector
from redline.gateway.gateway import Gateway as Gateway
from redline.gateway.model import UpstreamModel as UpstreamModel
from redline.gateway.upstream import Upstream as Upstream

__all__, __getattr__, __dir__ = _lazy_exports(__name__)
