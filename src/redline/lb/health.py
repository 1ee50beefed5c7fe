"""Active health checks: probe a replica over HTTP and move it between up and down.

HAProxy-style thresholds: ``fall`` failed checks in a row take an up replica down, ``rise``
good checks in a row bring it back. Crashed replicas come back after a capped exponential
backoff::

    >>> backoff_delay(3, base=0.5, cap=30.0)
    2.0

:class:`ReplicaChecks` is what a supervisor runs each round: restart the crashed replicas in
place when their backoff is over, probe the running ones, scrape ``requests_served``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container

import httpx

from redline.lb._metrics import requests_served
from redline.lb.cluster_options import ClusterOptions, HealthCheck
from redline.lb.replica import Replica, ReplicaState

__all__ = ["ReplicaChecks", "ReplicaProbe", "backoff_delay", "record_check"]

logger = logging.getLogger(__name__)


def backoff_delay(crashes: int, *, base: float, cap: float) -> float:
    """Seconds to wait before restarting after the *crashes*-th crash in a row."""
    if crashes < 1:
        raise ValueError(f"crashes must be >= 1, got {crashes}")
    return float(min(base * 2 ** (crashes - 1), cap))


def record_check(replica: Replica, ok: bool, health: HealthCheck) -> None:
    """Count one check result and apply the fall/rise thresholds to ``replica.state``."""
    if ok:
        replica.successes += 1
        replica.failures = 0
        if replica.state is not ReplicaState.UP and replica.successes >= health.rise:
            logger.info("replica %d is up", replica.index)
            replica.state = ReplicaState.UP
            replica.crashes = 0
    else:
        replica.failures += 1
        replica.successes = 0
        if replica.state is ReplicaState.UP and replica.failures >= health.fall:
            logger.warning("replica %d failed %d checks; marking down", replica.index, health.fall)
            replica.state = ReplicaState.DOWN


class ReplicaProbe:
    """HTTP probes of replicas on 127.0.0.1 (no proxies from the environment).

    *metrics_key* is sent as a bearer token with the ``/metrics`` scrape (replicas that run
    with ``REDLINE_METRICS_AUTH=true`` want one).

    >>> probe = ReplicaProbe(HealthCheck(path="/ready", timeout=1.0))
    """

    def __init__(self, health: HealthCheck, *, metrics_key: str | None = None) -> None:
        self.health = health
        self._client = httpx.AsyncClient(trust_env=False, timeout=health.timeout)
        self._metrics_headers = {"Authorization": f"Bearer {metrics_key}"} if metrics_key else {}

    def __repr__(self) -> str:
        return f"ReplicaProbe(path={self.health.path!r}, timeout={self.health.timeout})"

    async def ready(self, replica: Replica) -> bool:
        """GET the health path; True on HTTP 200, False on anything else or no answer."""
        try:
            response = await self._client.get(replica.url + self.health.path)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def metrics(self, replica: Replica) -> str | None:
        """The replica's ``/metrics`` text, or None if it has none or does not answer."""
        try:
            response = await self._client.get(
                replica.url + "/metrics", headers=self._metrics_headers
            )
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


class ReplicaChecks:
    """The active checks of a supervisor's replicas, through one :class:`ReplicaProbe`
    (opened by :meth:`open`; once closed, every probe fails).

    Example::

        checks = ReplicaChecks(options)
        checks.open()
        await checks.wait_ready(replica)          # until UP, or startup_timeout
        await checks.check(replica, time.monotonic(), busy=set())
        await checks.aclose()
    """

    def __init__(
        self,
        options: ClusterOptions,
        *,
        metrics_key: str | None = None,
        timer: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self._probe: ReplicaProbe | None = None  # opened by open()
        self._metrics_key = metrics_key
        self._timer, self._wall = timer, wall_clock

    def open(self) -> None:
        """Open the probe's connection pool."""
        self._probe = ReplicaProbe(self.options.health, metrics_key=self._metrics_key)

    async def check(self, replica: Replica, now: float, busy: Container[int]) -> None:
        """Advance one replica's state machine (*busy*: the indexes an operation has taken
        over; a probe's answer for one of them is dropped)."""
        if replica.exited:
            replica.crashes += 1
            delay = backoff_delay(
                replica.crashes, base=self.options.backoff_base, cap=self.options.backoff_max
            )
            logger.warning(
                "replica %d (port %d) died; restarting in %.1fs", replica.index, replica.port, delay
            )
            await replica.stop()
            replica.state = ReplicaState.DOWN
            replica.restart_at = now + delay
            return
        if not replica.alive:
            if replica.restart_at is not None and now >= replica.restart_at:
                replica.restart_at = None
                replica.restarts += 1
                replica.start()
            return
        ok = await self._ready(replica)
        if replica.index in busy:  # a rolling restart took it over meanwhile
            return
        replica.last_check = self._wall()
        record_check(replica, ok, self.options.health)

    async def _ready(self, replica: Replica) -> bool:
        """One readiness probe (False once closed)."""
        return self._probe is not None and await self._probe.ready(replica)

    async def fetch_metrics(self, replica: Replica) -> None:
        """Refresh ``requests_served`` from the replica's ``/metrics`` (best effort)."""
        if self._probe is None or not replica.alive:
            return
        text = await self._probe.metrics(replica)
        if text is not None:
            replica.requests_served = requests_served(text)

    async def wait_ready(self, replica: Replica) -> bool:
        """Probe until the replica is ready (state UP) or the startup timeout passes."""
        deadline = self._timer() + self.options.startup_timeout
        while self._timer() < deadline:
            if replica.exited:
                logger.error("replica %d exited during startup", replica.index)
                break
            if await self._ready(replica):
                replica.state = ReplicaState.UP
                replica.last_check = self._wall()
                return True
            await asyncio.sleep(min(0.1, self.options.health.interval))
        replica.state = ReplicaState.DOWN
        return False

    async def aclose(self) -> None:
        """Close the probe's connection pool."""
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.aclose()
