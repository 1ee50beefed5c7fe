"""The cluster's live status page, served by the supervisor itself (``--status-port``).

``GET /status`` is the page (:func:`redline._status_page.render_status_page`), ``GET
/status.json`` what it shows: every replica's state, its last check (result and time),
restarts, requests served and share of the traffic, and the cluster's totals. A replica's
rate and share are over the last ``window`` seconds of its request counter (the supervisor
scrapes each replica's ``/metrics``); a restarted replica's counter starts again from zero.

A few dozen lines of HTTP/1.1 on :func:`asyncio.start_server` (GET only, one request per
connection) keep the supervisor free of a web framework and of a second server's signal
handling. With *api_keys* the JSON needs ``Authorization: Bearer <key>``, as ``/metrics`` does
under ``REDLINE_METRICS_AUTH=true``::

    async with ClusterStatusServer(supervisor, host="127.0.0.1", port=8090):
        await supervisor.serve(stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from redline._status_page import CONTENT_SECURITY_POLICY, render_status_page
from redline.exceptions import ClusterError
from redline.lb.replica import Replica, ReplicaState
from redline.lb.supervisor import ClusterSupervisor

__all__ = ["ClusterStatusServer", "cluster_document"]

logger = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_READ_TIMEOUT = 5.0
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}


class _Window:
    """Snapshots of every replica's request counter over the last *seconds*."""

    def __init__(self, seconds: float, timer: Callable[[], float]) -> None:
        self.seconds = seconds
        self._timer = timer
        self._snapshots: deque[tuple[float, dict[int, tuple[int | None, int]]]] = deque()

    def rates(self, replicas: Sequence[Replica]) -> tuple[float, dict[int, float | None]]:
        """(span covered, requests per second per replica index) over the window.

        A replica's counter is differenced within one process only: it starts again from zero
        when the replica restarts (and the supervisor may still hold the old process's count
        until its next scrape), so the base is the last snapshot of the current process where
        the counter did not go down. A replica not running serves nothing.
        """
        now = self._timer()
        current = {r.index: (r.pid, r.requests_served or 0) for r in replicas}
        while self._snapshots and self._snapshots[0][0] < now - self.seconds:
            self._snapshots.popleft()
        self._snapshots.append((now, current))
        span = now - self._snapshots[0][0]
        if span <= 0:
            return 0.0, {r.index: None for r in replicas}
        rates: dict[int, float | None] = {}
        for r in replicas:
            pid, count = current[r.index]
            if pid is None:
                rates[r.index] = 0.0
                continue
            base: int | None = None
            previous: int | None = None
            for _, snapshot in self._snapshots:
                old_pid, old_count = snapshot.get(r.index, (None, 0))
                if old_pid != pid:
                    base = previous = None
                    continue
                if base is None or (previous is not None and old_count < previous):
                    base = old_count
                previous = old_count
            rates[r.index] = (count - (base if base is not None else count)) / span
        return span, rates


def _check(replica: Replica) -> str:
    """The last check, in words."""
    if replica.state is ReplicaState.DOWN and not replica.alive:
        return "process exited"
    if replica.failures:
        return f"failed ({replica.failures} in a row)"
    if replica.successes:
        return "ok"
    return "pending"


def cluster_document(
    supervisor: ClusterSupervisor, window: _Window, *, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """The JSON-ready status of *supervisor*'s cluster (``kind == "cluster"``)."""
    replicas = list(supervisor.replicas)
    span, rates = window.rates(replicas)
    served = [r.requests_served for r in replicas if r.requests_served is not None and r.alive]
    total_rate = sum(v for v in rates.values() if v is not None) if span > 0 else None
    cumulative = sum(served)
    rows = []
    for r in replicas:
        rate = rates.get(r.index)
        if total_rate:
            share = (rate or 0.0) / total_rate
        elif cumulative:
            share = (r.requests_served or 0) / cumulative if r.alive else 0.0
        else:
            share = None
        rows.append(
            {
                "index": r.index,
                "port": r.port,
                "pid": r.pid,
                "state": r.state.value,
                "check": _check(r),
                "failures": r.failures,
                "last_check": r.last_check,
                "restarts": r.restarts,
                # a replica not running has no counter (its last one is gone with it)
                "requests": r.requests_served if r.alive else None,
                "rate": rate,
                "share": share,
            }
        )
    nginx = supervisor.nginx
    return {
        "kind": "cluster",
        "title": "redline cluster",
        "time": clock(),
        "listen": supervisor.options.listen,
        "strategy": supervisor.options.strategy.value,
        "nginx_pid": nginx.pid if nginx is not None and nginx.running else None,
        "check_interval": supervisor.options.health.interval,
        "window_seconds": span,
        "totals": {
            "replicas": len(replicas),
            "up": sum(r.state is ReplicaState.UP for r in replicas),
            "requests": cumulative if served else None,
            "rate": total_rate,
            "restarts": sum(r.restarts for r in replicas),
        },
        "replicas": rows,
    }


class ClusterStatusServer:
    """Serve ``/status`` and ``/status.json`` for *supervisor* on *host*:*port*.

    Parameters that matter: *api_keys* (empty: no key needed), *refresh* (seconds between
    the page's polls; default the check interval), *window* (seconds the rates cover).
    """

    def __init__(
        self,
        supervisor: ClusterSupervisor,
        *,
        host: str = "127.0.0.1",
        port: int,
        api_keys: Sequence[str] = (),
        refresh: float | None = None,
        window: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.supervisor = supervisor
        self.host = host
        self.port = port
        self._keys = tuple(k.encode() for k in api_keys)
        self._page = render_status_page(
            title="redline cluster",
            source="status.json",
            refresh=refresh or supervisor.options.health.interval,
        ).encode()
        self._window = _Window(window, timer)
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"ClusterStatusServer(host={self.host!r}, port={self.port})"

    @property
    def url(self) -> str:
        """The page's URL."""
        return f"http://{self.host}:{self.port}/status"

    async def __aenter__(self) -> ClusterStatusServer:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise ClusterError(
                f"cannot serve the status page on {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("cluster status page on %s", self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request, then close the connection."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            if len(head) > _MAX_HEAD:
                return
            status, headers, body = self._respond(head.decode("latin-1"))
            lines = [f"HTTP/1.1 {status} {_REASONS[status]}", *headers]
            lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, head: str) -> tuple[int, list[str], bytes]:
        """(status, header lines, body) for one request head."""
        request_line, *header_lines = head.split("\r\n")
        method, _, rest = request_line.partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if path not in ("/", "/status", "/status.json"):
            return _error(404, f"no such page {path[:100]!r}: see /status", "not_found")
        if method != "GET":
            error = _error(
                405, f"method {method[:20]!r} not allowed: use GET", "method_not_allowed"
            )
            error[1].append("Allow: GET")
            return error
        no_store = "Cache-Control: no-store"
        if path != "/status.json":
            page_headers = [
                "Content-Type: text/html; charset=utf-8",
                no_store,
                f"Content-Security-Policy: {CONTENT_SECURITY_POLICY}",
            ]
            return 200, page_headers, self._page
        if self._keys and not self._authorized(header_lines):
            error = _error(401, "missing or wrong API key: send 'Bearer <key>'", "invalid_api_key")
            error[1].append("WWW-Authenticate: Bearer")
            return error
        document = cluster_document(self.supervisor, self._window)
        body = json.dumps(document).encode()
        return 200, ["Content-Type: application/json", no_store], body

    def _authorized(self, header_lines: list[str]) -> bool:
        """Whether the ``Authorization`` header carries one of the keys."""
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                scheme, _, token = value.strip().partition(" ")
                given = token.strip().encode()
                matched = False
                for key in self._keys:
                    matched |= hmac.compare_digest(given, key)
                return scheme.lower() == "bearer" and matched
        return False


def _error(status: int, message: str, code: str) -> tuple[int, list[str], bytes]:
    """A JSON error in the server's shape."""
    kind = {401: "authentication_error", 404: "not_found_error"}.get(
        status, "invalid_request_error"
    )
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return status, ["Content-Type: application/json"], json.dumps(body).encode()
