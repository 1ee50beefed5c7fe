"""Openers for the server's outside resources (cache, database, usage writer, rate limiter,
gateway), each built from :class:`Settings` inside the lifespan.

They translate no errors: a setting that cannot work raises :class:`ConfigError` from the code
that reads it (``cache_from_url``, ``Database.open``, ``Gateway.open``,
``ClientRateLimiter.create``, and the usage queue's check here for a Redis cache).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from typing import TYPE_CHECKING

from redline.cache.base import Cache
from redline.exceptions import ConfigError
from redline.serve.metrics import ServerMetrics
from redline.serve.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from redline.cache.breaker import CircuitBreaker
    from redline.cache.write_behind import RedisStreamQueue
    from redline.gateway import Gateway
    from redline.serve.database import Database
    from redline.serve.ratelimit import ClientRateLimiter
    from redline.serve.usage import UsageRecorder

__all__ = ["open_cache", "open_database", "open_gateway", "open_limiter", "open_usage"]

logger = logging.getLogger(__name__)


async def open_cache(settings: Settings) -> Cache | None:
    """The embedding cache named by ``cache_url`` (None when caching is off)."""
    if not settings.cache_enabled:
        return None
    from redline.cache.url import cache_from_url

    cache = cache_from_url(settings.cache_url)
    opener = getattr(cache, "__aenter__", None)
    if opener is not None:
        await opener()
    return cache


async def open_database(settings: Settings) -> Database:
    """The model registry + usage database (SQLite in ``data_dir`` unless ``database_url``)."""
    from redline.serve.database import Database

    return await Database.open(settings.resolved_database_url, data_dir=settings.data_dir)


async def open_usage(
    settings: Settings, database: Database, metrics: ServerMetrics, cache: Cache | None = None
) -> UsageRecorder:
    """The usage-record writer (write-behind into the ``usage`` table), through a Redis
    stream on the cache's client when ``settings.durable_usage``."""
    from redline.serve.usage import UsageRecorder

    queue = breaker = None
    if settings.durable_usage:
        queue, breaker = _usage_stream(settings, cache)
    recorder = UsageRecorder(
        database,
        durable_queue=queue,
        durable_breaker=breaker,
        backlog_gauge=metrics.write_behind_backlog,
    )
    await recorder.start()
    return recorder


def _usage_stream(
    settings: Settings, cache: Cache | None
) -> tuple[RedisStreamQueue, Callable[[], CircuitBreaker]]:
    """The durable usage queue: a stream read by the group ``redline-usage``; and the
    breaker of the node that holds it (the cache's own, so the usage writes and the cache
    share one view of that node: see :mod:`redline.serve.usage`).

    The consumer name is stable across restarts of a one-worker server (host name and port),
    so a restarted server first writes what it had read before it died; with several workers
    each worker's name adds its pid, and the entries of a dead one are claimed by a live one
    after ``usage_claim_idle`` seconds.
    """
    from redline.cache.shared_redis import SharedRedis
    from redline.cache.write_behind import RedisStreamQueue

    redis = SharedRedis.of_cache(cache)
    if redis is None:
        raise ConfigError(
            f"REDLINE_USAGE_QUEUE needs a Redis cache to hold the usage stream, got {cache!r}"
        )
    consumer = f"{socket.gethostname()}:{settings.port}"
    if settings.workers > 1:
        consumer += f":{os.getpid()}"
    stream = settings.resolved_usage_stream
    queue = RedisStreamQueue(
        redis.client, stream, "redline-usage", consumer, claim_idle=settings.usage_claim_idle
    )
    return queue, functools.partial(redis.breaker_for, stream)


async def open_limiter(settings: Settings, cache: Cache | None) -> ClientRateLimiter | None:
    """The per-client rate limiter, or None when ``rate_limit`` is unset; with Redis, on
    *cache*'s client and breakers (one pool and one view of each node for both)."""
    if settings.rate_limit is None:
        return None
    from redline.serve.ratelimit import ClientRateLimiter

    return await ClientRateLimiter.create(settings, cache)


async def open_gateway(
    settings: Settings,
    cache: Cache | None,
    database: Database | None,
    metrics: ServerMetrics | None = None,
) -> Gateway | None:
    """The upstreams of ``settings.upstreams`` (None when there are none), their models
    registered in the database so ``/v1/models`` lists them beside the local ones; their
    calls counted in *metrics*."""
    if not settings.upstreams:
        return None
    from redline.gateway import Gateway
    from redline.gateway.observer import NO_OBSERVER

    gateway = await Gateway.open(
        settings.upstreams,
        cache=cache,
        cache_ttl=settings.cache_ttl,
        observer=metrics.gateway if metrics is not None else NO_OBSERVER,
    )
    if database is not None:
        for model in gateway.models.values():
            owners = ",".join(upstream.name for upstream in model.route.upstreams)
            await database.register_model(model, owned_by=f"upstream:{owners}")
    return gateway
