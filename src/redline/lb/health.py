"""Active health checks: probe a replica over HTTP and move it between up and down.

HAProxy-style thresholds: ``fall`` failed checks in a row take an up replica down, ``rise``
good checks in a row bring it back. Crashed replicas come back after a capped exponential
backoff::

    >>> backoff_delay(3, base=0.5, cap=30.0)
    2.0
"""

from __future__ import annotations

import logging

import httpx

from redline.lb.cluster_options import HealthCheck
from redline.lb.replica import Replica, ReplicaState

__all__ = ["ReplicaProbe", "backoff_delay", "record_check"]

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
