"""One Redis URL parser and one connection factory for every Redis user in redline.

>>> target = parse_redis_url("rediss+cluster://app:s3cret@[::1]:7000,10.0.0.2:7000?socket_timeout=1")
>>> target.cluster, target.tls, target.nodes[0], target.username
(True, True, ('::1', 7000), 'app')
>>> client = redis_client(target)      # RedisCluster; nothing connects until first used

URL forms (an optional ``tiered+`` prefix sets ``tiered``)::

    redis://[user:password@]host[:port][/db][?options]
    rediss://...                              the same over TLS
    redis+cluster://host:port,host:port,...   Redis Cluster (no /db: Cluster has only db 0)
    rediss+cluster://...                      Redis Cluster over TLS

Hosts may be names, IPv4 addresses or bracketed IPv6 literals (``[::1]:6379``); the port
defaults to 6379. Connection options in the query: ``socket_timeout``,
``socket_connect_timeout`` (seconds, default 0.5 each) and ``max_connections`` (default
64); every other known option (:data:`CACHE_OPTIONS`) is kept, typed, in
:attr:`RedisTarget.options` for the cache built from the URL. Unix sockets are not
supported. A bad URL raises :class:`~redline.exceptions.ConfigError` naming the problem.

:func:`redis_client` builds the client the cache, the invalidation channel, the rate
limiters and the usage stream share: the same timeouts, TLS and credentials everywhere, and
no slow retries (one immediate retry of a dropped pooled connection on standalone Redis,
none on a Cluster, where redis-py's retry closes every node's connections; a failing node is
the circuit breaker's business).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from redline.cache._redis_connection import report_to_breakers
from redline.exceptions import ConfigError

__all__ = [
    "CACHE_OPTIONS",
    "REDIS_SCHEMES",
    "RedisTarget",
    "node_client",
    "parse_redis_url",
    "redis_client",
]

REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
SERIALIZERS = ("json", "msgpack", "pickle")
SECRET_ENV = "REDLINE_CACHE_SECRET"
DEFAULT_PORT = 6379


def to_int(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def to_float(name: str, value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 0/1 or true/false, got {value!r}")


def to_str(name: str, value: Any) -> str:
    return str(value)


def to_serializer(name: str, value: Any) -> str:
    if value not in SERIALIZERS:
        raise ConfigError(f"serializer must be one of {', '.join(SERIALIZERS)}, got {value!r}")
    return str(value)


def _positive_float(name: str, value: Any) -> float:
    number = to_float(name, value)
    if not number > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return number


def _positive_int(name: str, value: Any) -> int:
    number = to_int(name, value)
    if number < 1:
        raise ConfigError(f"{name} must be >= 1, got {value!r}")
    return number


CONNECTION_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "socket_timeout": _positive_float,
    "socket_connect_timeout": _positive_float,
    "max_connections": _positive_int,
}
CACHE_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "namespace": to_str,
    "ttl": to_float,
    "jitter": to_float,
    "serializer": to_serializer,
    "name": to_str,
    "tiered": to_bool,
    "l1_max_entries": to_int,
    "l1_max_bytes": to_int,
    "l1_ttl": to_float,
    "channel": to_str,
    "invalidation": to_bool,
}


@dataclass(frozen=True)
class RedisTarget:
    """Where and how to reach Redis: one server (``nodes[0]``) or a Cluster (any of ``nodes``).

    Build it with :func:`parse_redis_url` or directly; :func:`redis_client` turns it into a
    client. ``password`` is left out of ``repr``; :meth:`display` shows the URL without it.
    """

    nodes: tuple[tuple[str, int], ...]
    cluster: bool = False
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    socket_timeout: float = 0.5
    socket_connect_timeout: float = 0.5
    max_connections: int = 64
    tiered: bool = False
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("a Redis target needs at least one (host, port) node")
        for host, port in self.nodes:
            if not host or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(f"bad Redis node {(host, port)!r}; expected (host, 1-65535)")
        if not self.cluster and len(self.nodes) > 1:
            raise ConfigError("several nodes need cluster=True (a redis+cluster:// URL)")
        if self.cluster and self.db != 0:
            raise ConfigError(f"Redis Cluster has only database 0, got db={self.db}")
        for name in ("socket_timeout", "socket_connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {self.max_connections!r}")

    @property
    def scheme(self) -> str:
        return ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")

    def display(self) -> str:
        """The target as a URL with the password masked (for logs and error messages)."""
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.nodes)
        return f"{self.scheme}://{auth}{hosts}" + ("" if self.cluster else f"/{self.db}")


def _host_port(text: str, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ConfigError(f"unclosed or empty [IPv6] host {text!r} in cache URL {url!r}")
        if rest and not rest.startswith(":"):
            raise ConfigError(f"expected :port after [{host}] in cache URL {url!r}")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise ConfigError(
                f"IPv6 hosts need brackets ([{text}] or [addr]:port) in cache URL {url!r}"
            )
        host, sep, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if sep else None
        if not host:
            raise ConfigError(f"cache URL has no host: {url!r}")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"bad port {port_text!r} in cache URL {url!r}; expected 1-65535")
    return host, int(port_text)


def _query(query: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    allowed = CONNECTION_OPTIONS | CACHE_OPTIONS
    raw: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
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


def parse_redis_url(url: str, **overrides: Any) -> RedisTarget:
    """The :class:`RedisTarget` a Redis URL describes; *overrides* replace query options."""
    if not isinstance(url, str):
        raise ConfigError(f"Redis URL must be a str, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    base = scheme.removeprefix("tiered+")
    if not sep or base not in REDIS_SCHEMES:
        allowed = ", ".join(REDIS_SCHEMES)
        raise ConfigError(
            f"unknown cache URL scheme {scheme if sep else url!r}; allowed: {allowed} "
            f"(each also as tiered+...)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"malformed cache URL {url!r}: {exc}") from None
    if parts.fragment:
        raise ConfigError(f"cache URLs take no #fragment: {url!r}")
    params = _query(parts.query, overrides)
    connection = {name: params.pop(name) for name in CONNECTION_OPTIONS if name in params}
    tiered = scheme.startswith("tiered+") or bool(params.pop("tiered", False))
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    cluster = base.endswith("+cluster")
    if not hosts:
        raise ConfigError(f"cache URL has no host: {url!r}")
    if cluster:
        if parts.path not in ("", "/"):
            raise ConfigError(
                f"redis+cluster URLs take no database number (Redis Cluster has only db 0), "
                f"got {parts.path!r}"
            )
        db = 0
    else:
        if "," in hosts:
            raise ConfigError(
                f"several hosts need a redis+cluster:// URL, got {base}:// in {url!r}"
            )
        db_text = parts.path.lstrip("/") or "0"
        if not db_text.isdigit():
            raise ConfigError(f"database must be a number, got {db_text!r} in {url!r}")
        db = int(db_text)
    return RedisTarget(
        nodes=tuple(_host_port(node, url) for node in hosts.split(",")),
        cluster=cluster,
        tls=base.startswith("rediss"),
        username=unquote(username) or None,
        password=unquote(password) or None,
        db=db,
        tiered=tiered,
        options=params,
        **connection,
    )


def _common(
    target: RedisTarget, socket_timeout: float | None, socket_connect_timeout: float | None
) -> dict[str, Any]:
    return {
        "socket_timeout": target.socket_timeout if socket_timeout is None else socket_timeout,
        "socket_connect_timeout": (
            target.socket_connect_timeout
            if socket_connect_timeout is None
            else socket_connect_timeout
        ),
        "max_connections": target.max_connections,
        "username": target.username,
        "password": target.password,
        "ssl": target.tls,
    }


def redis_client(target: RedisTarget) -> Redis | RedisCluster:
    """A redis-py asyncio client for *target* (``decode_responses=False``); no I/O yet.

    A ``RedisCluster`` for a Cluster target (no retries: redis-py's Cluster retry closes
    every node's connections and sleeps; a failing node is the breaker's business and a
    moved slot is followed without one), else a ``Redis`` on ``nodes[0]``. Its connections
    tell the circuit breaker of the call using them when they connect, send and read, so
    setting one up is no stall (:mod:`redline.cache._redis_connection`).
    """
    if not target.cluster:
        return node_client(target, target.nodes[0])
    return report_to_breakers(
        RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            retry=Retry(NoBackoff(), 0),
            **_common(target, None, None),
        )
    )


def node_client(
    target: RedisTarget,
    node: tuple[str, int],
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    retries: int = 1,
) -> Redis:
    """A standalone ``Redis`` client on *node* with *target*'s TLS, credentials, db and
    timeouts (``socket_timeout`` / ``socket_connect_timeout`` replace the target's).

    ``retries`` immediate retries replace a pooled connection that died with a restart
    (redis-py's default backs off for seconds, which no caller here may do); never on a
    timeout, or a Redis that stopped answering would cost every call two.
    """
    host, port = node
    client = Redis(
        host=host,
        port=port,
        db=target.db,
        retry=(
            Retry(NoBackoff(), retries, supported_errors=(redis_errors.ConnectionError,))
            if retries
            else Retry(NoBackoff(), 0)
        ),
        **_common(target, socket_timeout, socket_connect_timeout),
    )
    report_to_breakers(client)
    return client
