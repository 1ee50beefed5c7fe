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

from redline.gateway.config import UpstreamConfig, parse_upstream
from redline.gateway.ejector import EjectorStats, OutlierEjector
from redline.gateway.gateway import Gateway
from redline.gateway.model import UpstreamModel
from redline.gateway.upstream import Upstream

__all__ = [
    "EjectorStats",
    "Gateway",
    "OutlierEjector",
    "Upstream",
    "UpstreamConfig",
    "UpstreamModel",
    "parse_upstream",
]
