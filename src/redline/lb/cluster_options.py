"""Typed, validated options for ``redline cluster``: replicas, ports, health checks, backoff.

>>> ClusterOptions(replicas=3, base_port=9001).ports()
[9001, 9002, 9003]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from redline.exceptions import ConfigError
from redline.lb.options import (
    NginxOptions,
    RateLimit,
    Strategy,
    UpstreamServer,
    check_listen,
)

__all__ = ["ClusterOptions", "HealthCheck"]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checks, HAProxy style: GET *path* every *interval* seconds.

    A replica goes down after *fall* consecutive failures and comes back after *rise*
    consecutive successes; a probe slower than *timeout* seconds is a failure.

    >>> HealthCheck(interval=0.5, fall=3).rise
    2
    """

    path: str = "/ready"
    interval: float = 1.0
    timeout: float = 1.0
    fall: int = 2
    rise: int = 2

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigError(f"health check path must start with '/', got {self.path!r}")
        if self.interval <= 0 or self.timeout <= 0:
            raise ConfigError(
                f"interval and timeout must be > 0 seconds, got {self.interval} and {self.timeout}"
            )
        if self.fall < 1 or self.rise < 1:
            raise ConfigError(f"fall and rise must be >= 1, got {self.fall} and {self.rise}")


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """What ``redline cluster`` runs: N replicas behind one nginx, and how to supervise them.

    ``base_port=None`` picks free loopback ports. ``max_replicas`` (default: ``replicas``)
    is the number of upstream *slots*: spare ones let the cluster scale up to that many
    replicas without an nginx reload. ``weights`` (one per replica) feed the upstream
    ``weight=``; spare slots get weight 1. Backoff after a crash is
    ``backoff_base * 2**(crashes - 1)`` seconds, capped at ``backoff_max``.
    ``max_fails``/``fail_timeout`` are nginx's passive checks: a dead replica (or a spare slot)
    refuses connections, and after ``max_fails`` refusals nginx skips it for ``fail_timeout``
    seconds, retrying the request elsewhere meanwhile; a few failures are tolerated so one bad
    request cannot eject every replica at once.

    >>> ClusterOptions(replicas=3, base_port=9001).ports()
    [9001, 9002, 9003]
    """

    replicas: int = 2
    max_replicas: int | None = None
    base_port: int | None = None
    listen: str = "127.0.0.1:8080"
    strategy: Strategy = Strategy.ROUND_ROBIN
    weights: tuple[int, ...] | None = None
    hash_key: str = "$http_x_cache_key"
    rate_limit: RateLimit | None = None
    worker_processes: int | str = 1
    max_fails: int = 3
    fail_timeout: float = 2.0
    run_dir: Path = Path(".redline/cluster")
    health: HealthCheck = field(default_factory=HealthCheck)
    startup_timeout: float = 120.0
    drain_seconds: float = 1.0
    stop_timeout: float = 15.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Strategy.parse(self.strategy))
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {self.replicas}")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ConfigError(
                f"max_replicas must be >= replicas ({self.replicas}), got {self.max_replicas}"
            )
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(self.weights))
            if len(self.weights) != self.replicas:
                raise ConfigError(
                    f"got {len(self.weights)} weights for {self.replicas} replicas; "
                    "give one weight per replica"
                )
            if any(w < 1 for w in self.weights):
                raise ConfigError(f"weights must be >= 1, got {list(self.weights)}")
        if self.base_port is not None and not (
            self.base_port >= 1 and self.base_port + self.slots - 1 <= 65535
        ):
            raise ConfigError(f"base_port {self.base_port} with {self.slots} slots leaves 1..65535")
        check_listen(self.listen)
        for name in ("startup_timeout", "stop_timeout", "backoff_base", "backoff_max"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.drain_seconds < 0:
            raise ConfigError(f"drain_seconds must be >= 0, got {self.drain_seconds}")
        # Fail now, not at the first reload: build the nginx options once.
        self.nginx_options([])

    @property
    def slots(self) -> int:
        """How many replica ports the upstream lists (``max_replicas`` or ``replicas``)."""
        return self.replicas if self.max_replicas is None else self.max_replicas

    def ports(self, free: list[int] | None = None) -> list[int]:
        """Slot ports: consecutive from ``base_port``, else the *free* ones given."""
        if self.base_port is not None:
            return [self.base_port + i for i in range(self.slots)]
        return list(free or [])

    def nginx_options(self, servers: list[UpstreamServer]) -> NginxOptions:
        """The :class:`NginxOptions` for *servers* (placeholders when the list is empty)."""
        servers = servers or [UpstreamServer("127.0.0.1", 1 + i) for i in range(self.slots)]
        weights = (*(self.weights or ()), *(1,) * len(servers))[: len(servers)]
        upstream = tuple(
            UpstreamServer(
                s.host,
                s.port,
                weight=w,
                max_fails=self.max_fails,
                fail_timeout=self.fail_timeout,
                down=s.down,
            )
            for s, w in zip(servers, weights, strict=True)
        )
        return NginxOptions(
            servers=upstream,
            listen=self.listen,
            strategy=self.strategy,
            hash_key=self.hash_key,
            rate_limit=self.rate_limit,
            worker_processes=self.worker_processes,
            foreground=True,
            # every server at most once per request (a spare slot or a dead replica refuses
            # at once), bounded in time by next_upstream_timeout
            next_upstream_tries=len(upstream),
        )
