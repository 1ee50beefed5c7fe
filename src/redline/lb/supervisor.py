"""Supervise N replicas behind one nginx: active health checks, crash restarts, rolling restarts.

The supervisor polls each replica's ``/ready``; a replica that fails ``fall`` checks in a row
is marked ``down`` in the generated nginx.conf and nginx is reloaded gracefully, and it comes
back after ``rise`` good checks. A replica that dies is restarted with capped exponential
backoff. A rolling restart takes one replica out of nginx at a time, lets it drain, restarts
it, waits for ``/ready`` and puts it back, so clients see no failed request.

Every reload retires nginx's old workers, which close their *idle* client keep-alive
connections; a client that sends on such a connection at that instant sees it closed before
any response and must retry (RFC 9112 9.3.1). Requests nginx has accepted are never lost::

    options = ClusterOptions(replicas=3, listen="127.0.0.1:8080")
    async with ClusterSupervisor(options, command=serve_command()) as supervisor:
        await supervisor.serve(stop_event)       # until stop_event is set
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from redline._ports import free_ports
from redline.exceptions import ClusterError, NginxError
from redline.lb._metrics import in_flight, requests_served
from redline.lb.cluster_options import ClusterOptions
from redline.lb.health import ReplicaProbe, backoff_delay, record_check
from redline.lb.nginx import NginxMaster, find_nginx
from redline.lb.options import UpstreamServer
from redline.lb.render import render_nginx_conf
from redline.lb.replica import Replica, ReplicaCommand, ReplicaState
from redline.lb.status import (
    SUPERVISOR_PID_FILE,
    ClusterStatus,
    ReplicaStatus,
    read_supervisor_pid,
)

__all__ = ["ClusterSupervisor"]

logger = logging.getLogger(__name__)


class ClusterSupervisor:
    """Own the replicas and the nginx master of one cluster run directory.

    Parameters that matter: *options* (replica count, ports, strategy, health checks),
    *command* (``(index, port) -> argv``; :func:`~redline.lb.serve_command` for real
    replicas), *nginx_binary* (found on ``$PATH`` when None).
    """

    def __init__(
        self,
        options: ClusterOptions,
        *,
        command: ReplicaCommand,
        nginx_binary: str | None = None,
        env: Mapping[str, str] | None = None,
        timer: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.run_dir = options.run_dir.resolve()
        self._nginx_binary = nginx_binary
        self._command = command
        self._env = dict(env or {})
        self._timer = timer
        self._wall = wall_clock
        self.replicas: list[Replica] = []
        self.nginx: NginxMaster | None = None
        self._applied_down: frozenset[int] | None = None
        self._busy: set[int] = set()
        self._sync_lock = asyncio.Lock()
        self._restart_lock = asyncio.Lock()
        self._restart_task: asyncio.Task[None] | None = None
        self._probe: ReplicaProbe | None = None
        self._last_metrics = 0.0
        self.reloads = 0

    def __repr__(self) -> str:
        states = ",".join(r.state.value for r in self.replicas)
        return (
            f"ClusterSupervisor(listen={self.options.listen!r}, replicas=[{states}], "
            f"reloads={self.reloads})"
        )

    async def __aenter__(self) -> ClusterSupervisor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the replicas, wait for them to be ready, write nginx.conf and start nginx."""
        binary = find_nginx(self._nginx_binary)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _claim_run_dir(self.run_dir)
        ports = self.options.ports(free_ports(self.options.replicas))
        self._probe = ReplicaProbe(self.options.health)
        self.replicas = [
            Replica(
                i,
                port,
                self._command,
                log_dir=self.run_dir / "logs",
                env={"REDLINE_DATA_DIR": str(self.run_dir / f"replica-{i}"), **self._env},
                timer=self._timer,
            )
            for i, port in enumerate(ports)
        ]
        try:
            for replica in self.replicas:
                replica.start()
            await asyncio.gather(*(self._wait_ready(r) for r in self.replicas))
            if not any(r.state is ReplicaState.UP for r in self.replicas):
                raise ClusterError(
                    f"no replica became ready within {self.options.startup_timeout}s; "
                    f"see {self.run_dir / 'logs'}"
                )
            self.nginx = NginxMaster(binary, self.run_dir)
            await self._write_config()
            await self.nginx.start(self.options.nginx_options([]).listen_port)
            self._write_status()
        except BaseException:
            await self.stop()
            raise
        logger.info("cluster up: nginx on %s, %d replicas", self.options.listen, len(ports))

    async def stop(self) -> None:
        """Stop nginx gracefully, then SIGTERM (drain) every replica; nothing is left running."""
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
            self._restart_task = None
        if self.nginx is not None:
            await self.nginx.quit(self.options.stop_timeout)
        await asyncio.gather(*(r.stop(self.options.stop_timeout) for r in self.replicas))
        if self._probe is not None:
            await self._probe.aclose()
            self._probe = None
        if self.replicas:
            self._write_status()
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / SUPERVISOR_PID_FILE).unlink()

    async def serve(self, stop: asyncio.Event, *, handle_signals: bool = False) -> None:
        """Health-check until *stop* is set.

        With *handle_signals*, SIGHUP starts a rolling restart and SIGINT/SIGTERM set *stop*.
        """
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGHUP, self.request_rolling_restart)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                await self.check_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.health.interval)
        finally:
            if handle_signals:
                for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    def request_rolling_restart(self) -> None:
        """Start a rolling restart in the background (ignored while one is running)."""
        if self._restart_task is None or self._restart_task.done():
            self._restart_task = asyncio.get_running_loop().create_task(self.rolling_restart())

    # -- health checks ---------------------------------------------------------------------

    async def check_once(self) -> None:
        """One round: detect crashes, restart due replicas, probe the rest, sync nginx."""
        now = self._timer()
        await asyncio.gather(
            *(self._check(r, now) for r in self.replicas if r.index not in self._busy)
        )
        if now - self._last_metrics >= 2.0:
            self._last_metrics = now
            await asyncio.gather(*(self._fetch_metrics(r) for r in self.replicas))
        await self._sync_nginx()
        self._write_status()

    async def _check(self, replica: Replica, now: float) -> None:
        """Advance one replica's state machine."""
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
        if replica.index in self._busy:  # a rolling restart took it over meanwhile
            return
        replica.last_check = self._wall()
        record_check(replica, ok, self.options.health)

    async def _ready(self, replica: Replica) -> bool:
        """One readiness probe (False once the supervisor is stopped)."""
        return self._probe is not None and await self._probe.ready(replica)

    async def _scrape(self, replica: Replica) -> str | None:
        """The replica's metrics text, if it is running and exports any."""
        if self._probe is None or not replica.alive:
            return None
        return await self._probe.metrics(replica)

    async def _fetch_metrics(self, replica: Replica) -> None:
        """Refresh ``requests_served`` from the replica's ``/metrics`` (best effort)."""
        text = await self._scrape(replica)
        if text is not None:
            replica.requests_served = requests_served(text)

    async def _wait_ready(self, replica: Replica) -> bool:
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

    # -- rolling restart -------------------------------------------------------------------

    async def rolling_restart(self) -> None:
        """Restart every replica, one at a time, without failing a client request."""
        async with self._restart_lock:
            logger.info("rolling restart of %d replicas", len(self.replicas))
            for replica in self.replicas:
                self._busy.add(replica.index)
                try:
                    replica.state = ReplicaState.RESTARTING
                    await self._sync_nginx()
                    await self._drain(replica)
                    await replica.stop(self.options.stop_timeout)
                    replica.restarts += 1
                    replica.start()
                    replica.state = ReplicaState.RESTARTING
                    self._write_status()
                    if not await self._wait_ready(replica):
                        logger.error("replica %d not ready after restart", replica.index)
                        continue
                    await self._sync_nginx()
                    # let the new workers take the replica before the next one leaves
                    await asyncio.sleep(min(self.options.drain_seconds, 1.0))
                finally:
                    self._busy.discard(replica.index)
                    self._write_status()

    async def _drain(self, replica: Replica) -> None:
        """Wait ``drain_seconds`` for the reload to land, then for in-flight requests to end.

        The in-flight count comes from the replica's ``/metrics`` gauge (the scrape itself
        counts as one); without the gauge the server's own SIGTERM drain covers the rest.
        """
        await asyncio.sleep(self.options.drain_seconds)
        deadline = self._timer() + self.options.stop_timeout
        while self._timer() < deadline:
            text = await self._scrape(replica)
            count = None if text is None else in_flight(text)
            if count is None or count <= 1:
                return
            await asyncio.sleep(0.05)

    # -- nginx -----------------------------------------------------------------------------

    def _down_set(self) -> frozenset[int]:
        """Replicas nginx must not use; none at all if every one is out (let nginx try)."""
        down = frozenset(r.index for r in self.replicas if r.state is not ReplicaState.UP)
        return frozenset() if len(down) == len(self.replicas) else down

    async def _write_config(self) -> None:
        """Render, ``nginx -t`` and install nginx.conf for the current down set."""
        if self.nginx is None:
            return
        down = self._down_set()
        servers = [UpstreamServer("127.0.0.1", r.port, down=r.index in down) for r in self.replicas]
        await self.nginx.write_and_check(render_nginx_conf(self.options.nginx_options(servers)))
        self._applied_down = down

    async def _sync_nginx(self) -> None:
        """Rewrite the config and reload nginx when the set of down replicas changed."""
        async with self._sync_lock:
            if (
                self.nginx is None
                or not self.nginx.running
                or self._down_set() == self._applied_down
            ):
                return
            try:
                await self._write_config()
                await self.nginx.reload()
            except NginxError:
                logger.exception("nginx reload failed; keeping the previous config")
                return
            self.reloads += 1
            logger.info("nginx reloaded; down replicas: %s", sorted(self._applied_down or ()))

    # -- status ----------------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """A snapshot of the cluster as ``redline cluster status`` shows it."""
        return ClusterStatus(
            listen=self.options.listen,
            strategy=self.options.strategy.value,
            supervisor_pid=os.getpid(),
            nginx_pid=self.nginx.pid if self.nginx is not None and self.nginx.running else None,
            updated=self._wall(),
            replicas=tuple(
                ReplicaStatus(
                    index=r.index,
                    port=r.port,
                    pid=r.pid,
                    state=r.state.value,
                    restarts=r.restarts,
                    requests_served=r.requests_served,
                    last_check=r.last_check,
                )
                for r in self.replicas
            ),
        )

    def _write_status(self) -> None:
        """Write ``status.json`` (errors are logged, never raised)."""
        try:
            self.status().write(self.run_dir)
        except OSError:
            logger.exception("cannot write cluster status to %s", self.run_dir)


def _claim_run_dir(run_dir: Path) -> None:
    """Write our pid file; ClusterError if a live supervisor already owns *run_dir*."""
    try:
        other = read_supervisor_pid(run_dir)
    except ClusterError:
        other = None  # no pid file (or a torn one): the directory is free
    if other is not None and other != os.getpid() and _pid_alive(other):
        raise ClusterError(f"a supervisor (pid {other}) is already running in {run_dir}")
    (run_dir / SUPERVISOR_PID_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    """Whether a process with *pid* exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
