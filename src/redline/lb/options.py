"""Typed, validated options for the nginx load balancer in front of redline replicas.

Every bad combination raises :class:`~redline.exceptions.ConfigError` here, with a message that
says what is wrong and what is allowed, before nginx ever sees the config::

    >>> opts = NginxOptions(servers=(UpstreamServer("127.0.0.1", 8001),), strategy="least_conn")
    >>> opts.strategy
    <Strategy.LEAST_CONN: 'least_conn'>
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from redline.exceptions import ConfigError

__all__ = [
    "NginxOptions",
    "RateLimit",
    "Strategy",
    "UpstreamServer",
    "make_rate_limit",
]

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$")
_VARIABLE_RE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")
_RATE_RE = re.compile(r"^[1-9][0-9]*r/[sm]$")
_SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")


class Strategy(enum.StrEnum):
    """How nginx picks a replica for each request."""

    ROUND_ROBIN = "round_robin"
    """Weighted round robin (nginx's default)."""
    LEAST_CONN = "least_conn"
    """The replica with the fewest active connections (weighted)."""
    IP_HASH = "ip_hash"
    """Sticky by client address."""
    RANDOM_TWO = "random_two"
    """``random two least_conn``: power of two choices."""
    HASH = "hash"
    """``hash <key> consistent``: cache affinity, identical inputs land on the same replica."""

    @classmethod
    def parse(cls, value: str | Strategy) -> Strategy:
        """Return the strategy named *value*, or raise ConfigError listing the allowed names."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ConfigError(f"unknown strategy {value!r}; allowed: {allowed}") from None


# Strategies for which nginx refuses a `backup` server.
_NO_BACKUP = frozenset({Strategy.IP_HASH, Strategy.HASH, Strategy.RANDOM_TWO})


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """One replica in the ``upstream`` block.

    >>> UpstreamServer("127.0.0.1", 8001, weight=3).address
    '127.0.0.1:8001'
    """

    host: str
    port: int
    weight: int = 1
    max_fails: int = 1
    fail_timeout: float = 10.0
    backup: bool = False
    down: bool = False

    def __post_init__(self) -> None:
        if not _HOST_RE.match(self.host):
            raise ConfigError(f"invalid upstream host {self.host!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.weight < 1:
            raise ConfigError(f"weight must be >= 1, got {self.weight}")
        if self.max_fails < 0:
            raise ConfigError(f"max_fails must be >= 0, got {self.max_fails}")
        if self.fail_timeout <= 0:
            raise ConfigError(f"fail_timeout must be > 0 seconds, got {self.fail_timeout}")
        if self.backup and self.down:
            raise ConfigError(f"server {self.address} cannot be both backup and down")

    @property
    def address(self) -> str:
        """``host:port`` as nginx writes it."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit_req`` per client address: ``rate`` like ``"100r/s"``, ``burst`` queued requests.

    Requests over the rate (beyond the burst) get HTTP 429.

    >>> RateLimit(rate="50r/s", burst=20, nodelay=True).zone_size
    '10m'
    """

    rate: str
    burst: int = 0
    nodelay: bool = False
    zone_size: str = "10m"

    def __post_init__(self) -> None:
        if not _RATE_RE.match(self.rate):
            raise ConfigError(f"rate must look like '100r/s' or '600r/m', got {self.rate!r}")
        if self.burst < 0:
            raise ConfigError(f"burst must be >= 0, got {self.burst}")
        if not _SIZE_RE.match(self.zone_size):
            raise ConfigError(f"zone_size must look like '10m', got {self.zone_size!r}")


@dataclass(frozen=True, slots=True)
class NginxOptions:
    """Everything :func:`~redline.lb.render_nginx_conf` needs.

    Paths (``pid_path``, ``temp_dir``, logs) are relative to nginx's prefix (``nginx -p DIR``)
    unless absolute, so a non-system prefix works without touching ``/etc/nginx``.

    The embedding and predict routes are pure functions of their input, so they are safe to
    retry on another replica even though they are POSTs: ``proxy_next_upstream`` includes
    ``non_idempotent`` for them (capped by ``next_upstream_tries`` / ``next_upstream_timeout``).

    Slow clients are cut: ``client_header_timeout`` / ``client_body_timeout`` bound each read
    of the request (408), ``client_send_timeout`` (nginx ``send_timeout``) each write of the
    response; ``read_timeout`` bounds a replica's silence. After a reload, old workers finish
    their requests for at most ``worker_shutdown_timeout`` seconds.

    >>> opts = NginxOptions(
    ...     servers=(UpstreamServer("127.0.0.1", 8001), UpstreamServer("127.0.0.1", 8002)),
    ...     strategy=Strategy.HASH,
    ... )
    >>> opts.hash_key
    '$http_x_cache_key'
    """

    servers: tuple[UpstreamServer, ...]
    listen: str = "127.0.0.1:8080"
    strategy: Strategy = Strategy.ROUND_ROBIN
    hash_key: str = "$http_x_cache_key"
    upstream_name: str = "redline_replicas"
    keepalive: int = 32
    keepalive_timeout: float = 60.0
    keepalive_requests: int = 1000
    client_header_timeout: float = 10.0
    client_body_timeout: float = 10.0
    client_send_timeout: float = 30.0
    worker_shutdown_timeout: float = 30.0
    connect_timeout: float = 2.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    next_upstream_tries: int = 3
    next_upstream_timeout: float = 10.0
    rate_limit: RateLimit | None = None
    client_max_body_size: str = "8m"
    worker_processes: int | str = "auto"
    worker_connections: int = 1024
    foreground: bool = True
    pid_path: str = "nginx.pid"
    temp_dir: str = "temp"
    access_log: str = "logs/access.log"
    error_log: str = "logs/error.log"
    streaming_paths: tuple[str, ...] = ("/v1/stream",)
    retry_paths: tuple[str, ...] = ("/v1/embeddings", "/v1/predict")

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Strategy.parse(self.strategy))
        object.__setattr__(self, "servers", tuple(self.servers))
        if not self.servers:
            raise ConfigError("at least one upstream server is required")
        if all(s.backup for s in self.servers):
            raise ConfigError("at least one upstream server must not be a backup")
        addresses = [s.address for s in self.servers]
        if len(set(addresses)) != len(addresses):
            raise ConfigError(f"duplicate upstream servers: {', '.join(addresses)}")
        if self.strategy in _NO_BACKUP and any(s.backup for s in self.servers):
            raise ConfigError(
                f"strategy {self.strategy.value!r} cannot have backup servers "
                "(nginx allows backup only with round_robin or least_conn)"
            )
        if self.strategy is Strategy.HASH and not _VARIABLE_RE.match(self.hash_key):
            raise ConfigError(
                "hash_key must be one nginx variable like '$http_x_cache_key', "
                f"got {self.hash_key!r}"
            )
        check_listen(self.listen)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.upstream_name):
            raise ConfigError(f"invalid upstream name {self.upstream_name!r}")
        for name in (
            "keepalive",
            "next_upstream_tries",
            "worker_connections",
            "keepalive_requests",
        ):
            value = getattr(self, name)
            if value < (0 if name == "keepalive" else 1):
                low = 0 if name == "keepalive" else 1
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        for name in (
            "keepalive_timeout",
            "connect_timeout",
            "read_timeout",
            "send_timeout",
            "next_upstream_timeout",
            "client_header_timeout",
            "client_body_timeout",
            "client_send_timeout",
            "worker_shutdown_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        wp = self.worker_processes
        if not (wp == "auto" or (isinstance(wp, int) and wp >= 1)):
            raise ConfigError(f"worker_processes must be 'auto' or >= 1, got {wp!r}")
        if not _SIZE_RE.match(self.client_max_body_size):
            raise ConfigError(
                f"client_max_body_size must look like '8m', got {self.client_max_body_size!r}"
            )
        for name in ("pid_path", "temp_dir", "access_log", "error_log"):
            value = getattr(self, name)
            if not value or any(c.isspace() or c in ";{}'\"" for c in value):
                raise ConfigError(f"{name} must be a plain path, got {value!r}")
        for path in (*self.streaming_paths, *self.retry_paths):
            if not path.startswith("/") or any(c.isspace() or c in ";{}" for c in path):
                raise ConfigError(f"route paths must start with '/' and be plain, got {path!r}")

    @property
    def listen_port(self) -> int:
        """The port nginx listens on."""
        return int(self.listen.rsplit(":", 1)[-1])


def check_listen(listen: str) -> None:
    """Raise ConfigError unless *listen* is ``host:port`` with a valid port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"listen must be 'host:port', got {listen!r}")
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"port must be in 1..65535, got {int(port)}")


def make_rate_limit(
    rate: str | None, burst: int | None = None, nodelay: bool = False
) -> RateLimit | None:
    """Build a :class:`RateLimit` from optional CLI flags; ``burst`` without ``rate`` is an error.

    >>> make_rate_limit(None) is None
    True
    """
    if rate is None:
        if burst is not None or nodelay:
            raise ConfigError("burst and nodelay need a rate (e.g. rate='100r/s')")
        return None
    return RateLimit(rate=rate, burst=burst or 0, nodelay=nodelay)
