"""Build a cache from one URL: ``cache_from_url("redis://127.0.0.1:6379/0?ttl=60")``.

Schemes::

    memory://?max_entries=10000&max_bytes=67108864&ttl=60&jitter=0.1
    redis://[user:password@]host[:port][/db]?namespace=app&ttl=60   (IPv6: [::1]:6379)
    rediss://...                                  the same over TLS
    redis+cluster://host:port,host:port,...       Redis Cluster (no /db: Cluster has only db 0)
    rediss+cluster://...                          Redis Cluster over TLS
    tiered+redis://..., tiered+redis+cluster://...  the same as adding ``tiered=1``

Query parameters of every Redis scheme: ``namespace``, ``ttl`` (default TTL, seconds),
``jitter`` (TTL jitter fraction), ``serializer`` (``json`` (default), ``msgpack`` or
``pickle``), ``max_connections``, ``socket_timeout``, ``socket_connect_timeout``, ``name``,
and ``tiered=1``, which builds ``TieredCache(MemoryCache(...), RedisCache(...),
invalidation=RedisInvalidation(...))`` with the L1 options ``l1_max_entries``,
``l1_max_bytes``, ``l1_ttl``, ``channel`` (the invalidation channel) and ``invalidation=0``
to go without cross-process invalidation. ``memory://`` takes ``max_entries``,
``max_bytes``, ``ttl``, ``jitter`` and ``name``.

``serializer=pickle`` signs values with HMAC-SHA256 and needs a secret: pass ``secret=`` to
:func:`cache_from_url` or set ``REDLINE_CACHE_SECRET``; a secret in the URL is refused. Every
other keyword override replaces the URL's parameter of the same name. Nothing connects
until the cache is first used. Redis URLs are read by
:func:`redline.cache.redis_url.parse_redis_url` and connected by its ``redis_client``, as
for every other Redis user in redline. A bad URL raises :class:`~redline.exceptions.ConfigError`
(a ``ValueError``) that names the problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from redline.cache.base import Cache
from redline.cache.redis_url import (
    SECRET_ENV,
    RedisTarget,
    parse_redis_url,
    to_float,
    to_int,
    to_str,
)
from redline.exceptions import ConfigError

if TYPE_CHECKING:
    from redline.cache.redis import RedisCache

__all__ = ["SCHEMES", "cache_from_url"]

SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "tiered+redis",
    "tiered+rediss",
    "tiered+redis+cluster",
    "tiered+rediss+cluster",
)

MEMORY_PARAMS: dict[str, Callable[[str, Any], Any]] = {
    "max_entries": to_int,
    "max_bytes": to_int,
    "ttl": to_float,
    "jitter": to_float,
    "name": to_str,
}
L1_ONLY = ("l1_max_entries", "l1_max_bytes", "l1_ttl", "channel", "invalidation")


def _memory_params(query: str, overrides: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in raw:
            raise ConfigError(f"URL parameter {name!r} is given twice")
        raw[name] = value
    raw.update(overrides)
    unknown = sorted(set(raw) - set(MEMORY_PARAMS))
    if unknown:
        raise ConfigError(
            f"unknown cache URL parameter {unknown[0]!r}; "
            f"allowed: {', '.join(sorted(MEMORY_PARAMS))}"
        )
    return {name: MEMORY_PARAMS[name](name, value) for name, value in raw.items()}


def cache_from_url(url: str, **overrides: Any) -> Cache:
    """A cache described by *url* (see the module docstring for the schemes and parameters).

    Example::

        cache = cache_from_url("redis://127.0.0.1:6379/0?namespace=app&ttl=60&tiered=1")
        cache = cache_from_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
        cache = cache_from_url("redis://127.0.0.1/0?serializer=pickle", secret="s3cret")
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"unknown cache URL scheme {scheme if sep else url!r}; allowed: {', '.join(SCHEMES)}"
        )
    secret = overrides.pop("secret", None)
    if scheme == "memory":
        parts = urlsplit(url)
        if parts.fragment:
            raise ConfigError(f"cache URLs take no #fragment: {url!r}")
        return _memory(url, parts.netloc, parts.path, _memory_params(parts.query, overrides))
    target = parse_redis_url(url, **overrides)
    params = dict(target.options)
    l1_only = sorted(set(params) & set(L1_ONLY))
    if l1_only and not target.tiered:
        raise ConfigError(f"parameter {l1_only[0]!r} only applies with tiered=1")
    redis_cache = _redis(target, params, secret)
    if not target.tiered:
        return redis_cache
    return _tiered(target, redis_cache, params)


def _memory(url: str, netloc: str, path: str, params: dict[str, Any]) -> Cache:
    if netloc or path not in ("", "/"):
        raise ConfigError(f"memory URLs take no host or path: {url!r}")
    from redline.cache.memory import MemoryCache

    return MemoryCache(
        max_entries=params.get("max_entries", 10_000),
        max_bytes=params.get("max_bytes", 64 * 2**20),
        default_ttl=params.get("ttl"),
        ttl_jitter=params.get("jitter", 0.0),
        name=params.get("name", "memory"),
    )


def _redis(target: RedisTarget, params: dict[str, Any], secret: Any) -> RedisCache:
    from redline.cache.redis import RedisCache
    from redline.cache.redis_url import redis_client
    from redline.cache.serialization import serializer_from_name

    serializer_name = params.get("serializer", "json")
    if serializer_name == "pickle":
        secret = secret or os.environ.get(SECRET_ENV)
        if not secret:
            raise ConfigError(f"serializer=pickle needs a secret: pass secret= or set {SECRET_ENV}")
    serializer = serializer_from_name(serializer_name, secret=secret)
    return RedisCache(
        redis_client(target),
        namespace=params.get("namespace", "redline"),
        serializer=serializer,
        default_ttl=params.get("ttl"),
        ttl_jitter=params.get("jitter", 0.0),
        max_in_flight=target.max_connections,
        name=params.get("name", "redis"),
        owns_client=True,
    )


def _tiered(target: RedisTarget, l2: RedisCache, params: dict[str, Any]) -> Cache:
    from redline.cache.invalidation import RedisInvalidation
    from redline.cache.memory import MemoryCache
    from redline.cache.tiered import TieredCache

    l1 = MemoryCache(
        max_entries=params.get("l1_max_entries", 10_000),
        max_bytes=params.get("l1_max_bytes", 64 * 2**20),
        name="memory",
    )
    invalidation = None
    if params.get("invalidation", True):
        channel = params.get("channel", "redline:invalidate")
        invalidation = RedisInvalidation(target, channel=channel)
    return TieredCache(l1, l2, invalidation=invalidation, l1_ttl=params.get("l1_ttl"))
