"""Openers for the server's outside resources (cache, database, usage writer, rate limiter),
each built from :class:`Settings` inside the lifespan; errors become :class:`ConfigError`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redline.cache.base import Cache
from redline.serve.metrics import ServerMetrics
from redline.serve.settings import Settings

if TYPE_CHECKING:
    from redline.serve.database import Database
    from redline.serve.ratelimit import ClientRateLimiter
    from redline.serve.usage import UsageRecorder

__all__ = ["open_cache", "open_database", "open_limiter", "open_usage"]

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
    settings: Settings, database: Database, metrics: ServerMetrics
) -> UsageRecorder:
    """The usage-record writer (write-behind into the ``usage`` table)."""
    from redline.serve.usage import UsageRecorder

    recorder = UsageRecorder(database, backlog_gauge=metrics.write_behind_backlog)
    await recorder.start()
    return recorder


async def open_limiter(settings: Settings, cache: Cache | None) -> ClientRateLimiter | None:
    """The per-client rate limiter, or None when ``rate_limit`` is unset."""
    if settings.rate_limit is None:
        return None
    from redline.serve.ratelimit import ClientRateLimiter

    return await ClientRateLimiter.create(settings)
