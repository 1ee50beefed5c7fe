"""Build a cache from one URL: ``cache_from_url("redis://127.0.0.1:6379/0?ttl=60")``.

Schemes::

    memory://?max_entries=10000&max_bytes=67108864&ttl=60&jitter=0.1
    redis://[user:password@]host[:port][/db]?namespace=app&ttl=60
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
until the cache is first used. A bad URL raises :class:`~redline.exceptions.ConfigError`
(a ``ValueError``) that names the problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from redline.cache.base import Cache
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
SERIALIZERS = ("json", "msgpack", "pickle")
SECRET_ENV = "REDLINE_CACHE_SECRET"
DEFAULT_PORT = 6379


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 0/1 or true/false, got {value!r}")


def _to_str(name: str, value: Any) -> str:
    return str(value)


def _to_serializer(name: str, value: Any) -> str:
    if value not in SERIALIZERS:
        raise ConfigError(f"serializer must be one of {', '.join(SERIALIZERS)}, got {value!r}")
    return str(value)


MEMORY_PARAMS: dict[str, Callable[[str, Any], Any]] = {
    "max_entries": _to_int,
    "max_bytes": _to_int,
    "ttl": _to_float,
    "jitter": _to_float,
    "name": _to_str,
}
REDIS_PARAMS: dict[str, Callable[[str, Any], Any]] = {
    "namespace": _to_str,
    "ttl": _to_float,
    "jitter": _to_float,
    "serializer": _to_serializer,
    "max_connections": _to_int,
    "socket_timeout": _to_float,
    "socket_connect_timeout": _to_float,
    "name": _to_str,
    "tiered": _to_bool,
    "l1_max_entries": _to_int,
    "l1_max_bytes": _to_int,
    "l1_ttl": _to_float,
    "channel": _to_str,
    "invalidation": _to_bool,
}


def _params(
    query: str, overrides: dict[str, Any], allowed: dict[str, Callable[[str, Any], Any]]
) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name == "secret":
            raise ConfigError(f"never put the secret in the URL; pass secret= or set {SECRET_ENV}")
        if name in raw:
            raise ConfigError(f"URL parameter {name!r} is given twice")
        raw[name] = value
    raw.update(overrides)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown cache URL parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    return {name: allowed[name](name, value) for name, value in raw.items()}


def _host_port(text: str, url: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigError(f"cache URL has no host: {url!r}")
    if not sep:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"bad port {port_text!r} in cache URL {url!r}; expected 1-65535")
    return host, int(port_text)


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
    parts = urlsplit(url)
    if parts.fragment:
        raise ConfigError(f"cache URLs take no #fragment: {url!r}")
    if scheme == "memory":
        return _memory(
            url, parts.netloc, parts.path, _params(parts.query, overrides, MEMORY_PARAMS)
        )
    params = _params(parts.query, overrides, REDIS_PARAMS)
    tiered = scheme.startswith("tiered+") or params.pop("tiered", False)
    l1_only = sorted(
        set(params) & {"l1_max_entries", "l1_max_bytes", "l1_ttl", "channel", "invalidation"}
    )
    if l1_only and not tiered:
        raise ConfigError(f"parameter {l1_only[0]!r} only applies with tiered=1")
    base = scheme.removeprefix("tiered+")
    tls = base.startswith("rediss")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if "+cluster" in base:
        if parts.path not in ("", "/"):
            raise ConfigError(
                f"redis+cluster URLs take no database number (Redis Cluster has only db 0), "
                f"got {parts.path!r}"
            )
        nodes = [_host_port(node, url) for node in hosts.split(",")] if hosts else []
        if not nodes:
            raise ConfigError(f"cache URL has no host: {url!r}")
        target: str | list[tuple[str, int]] = nodes
    else:
        if "," in hosts:
            raise ConfigError(
                f"several hosts need a redis+cluster:// URL, got {base}:// in {url!r}"
            )
        host, port = _host_port(hosts, url)
        db = parts.path.lstrip("/") or "0"
        if not db.isdigit():
            raise ConfigError(f"database must be a number, got {db!r} in {url!r}")
        auth = userinfo + "@" if userinfo else ""
        target = f"{base}://{auth}{quote(host, safe='.:[]')}:{port}/{int(db)}"
        nodes = [(host, port)]
    redis_cache = _redis(target, userinfo, tls, params, secret)
    if not tiered:
        return redis_cache
    username, _, password = userinfo.partition(":")
    credentials = {"username": unquote(username) or None, "password": unquote(password) or None}
    return _tiered(nodes, redis_cache, params, ssl=tls, **credentials)


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


def _redis(
    target: str | list[tuple[str, int]],
    userinfo: str,
    tls: bool,
    params: dict[str, Any],
    secret: Any,
) -> RedisCache:
    from redline.cache.redis import RedisCache
    from redline.cache.serialization import serializer_from_name

    serializer_name = params.get("serializer", "json")
    if serializer_name == "pickle":
        secret = secret or os.environ.get(SECRET_ENV)
        if not secret:
            raise ConfigError(f"serializer=pickle needs a secret: pass secret= or set {SECRET_ENV}")
    serializer = serializer_from_name(serializer_name, secret=secret)
    common: dict[str, Any] = {
        "max_connections": params.get("max_connections", 64),
        "socket_timeout": params.get("socket_timeout", 0.5),
        "socket_connect_timeout": params.get("socket_connect_timeout", 0.5),
        "namespace": params.get("namespace", "redline"),
        "serializer": serializer,
        "default_ttl": params.get("ttl"),
        "ttl_jitter": params.get("jitter", 0.0),
        "name": params.get("name", "redis"),
    }
    if isinstance(target, str):
        return RedisCache.from_url(target, **common)

    username, _, password = userinfo.partition(":")
    return RedisCache.from_cluster_nodes(
        target,
        ssl=tls,
        username=unquote(username) or None,
        password=unquote(password) or None,
        **common,
    )


def _tiered(
    nodes: list[tuple[str, int]],
    l2: RedisCache,
    params: dict[str, Any],
    **auth: Any,
) -> Cache:
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
        invalidation = RedisInvalidation(nodes, channel=channel, **auth)
    return TieredCache(l1, l2, invalidation=invalidation, l1_ttl=params.get("l1_ttl"))
