"""Supervise N replicas behind one nginx: health checks, crash restarts, rolling restarts, scaling.

No request-path event reloads nginx. A reload retires nginx's workers, and a retiring worker
closes every *idle* client keep-alive connection at once, without a response: a client that
is sending on one at that instant gets a reset (see the README). So:

* a replica that dies is restarted **in place**, on the same port, with capped exponential
  backoff; meanwhile nginx's passive checks (``max_fails``/``fail_timeout``) and
  ``proxy_next_upstream`` send its requests to the other replicas;
* a rolling restart SIGTERMs one replica at a time: the server closes its listener (nginx's
  connects are refused and retried elsewhere) and finishes what it has in flight; the next
  one goes once the restarted one is ready and nginx has had ``fail_timeout`` to take it back;
* scaling uses spare *slots*: the upstream lists ``max_replicas`` ports from the start, and a
  slot without a replica is held bound-but-not-listening (:class:`~redline.lb.slots.PortHold`),
  so adding or removing a replica within them needs no reload. Only growing past
  ``max_replicas`` rewrites the upstream and reloads nginx.

The active ``/ready`` checks feed ``redline cluster status``; they never change nginx::

    options = ClusterOptions(replicas=3, max_replicas=5, listen="127.0.0.1:8080")
    async with ClusterSupervisor(options, command=serve_command()) as supervisor:
        await supervisor.scale(4)
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
from types import TracebackType

from redline._ports import free_ports
from redline.exceptions import ClusterError
from redline.lb._operations import OperationQueue
from redline.lb.cluster_options import ClusterOptions
from redline.lb.health import ReplicaChecks
from redline.lb.nginx import NginxMaster, find_nginx
from redline.lb.options import UpstreamServer
from redline.lb.render import render_nginx_conf
from redline.lb.replica import Replica, ReplicaCommand, ReplicaState
from redline.lb.slots import SlotTable
from redline.lb.status import (
    SUPERVISOR_PID_FILE,
    ClusterStatus,
    ReplicaStatus,
    claim_run_dir,
    read_scale_request,
)

__all__ = ["ClusterSupervisor"]

logger = logging.getLogger(__name__)


class ClusterSupervisor:
    """Own the replicas and the nginx master of one cluster run directory.

    Parameters that matter: *options* (replica count, slots, ports, strategy, health checks),
    *command* (``(index, port) -> argv``; :func:`~redline.lb.serve_command` for real
    replicas), *nginx_binary* (found on ``$PATH`` when None). A replica's index is its slot.
    """

    def __init__(
        self,
        options: ClusterOptions,
        *,
        command: ReplicaCommand,
        nginx_binary: str | None = None,
        env: Mapping[str, str] | None = None,
        metrics_key: str | None = None,
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
        self._slots = SlotTable()
        self._nginx_slots = 0  # how many slots the installed nginx.conf lists
        self._busy: set[int] = set()
        self._restart_lock = asyncio.Lock()
        self._operations = OperationQueue(logger)
        self._checks = ReplicaChecks(
            options, metrics_key=metrics_key, timer=timer, wall_clock=wall_clock
        )
        self._last_metrics = 0.0
        self.reloads = 0

    def __repr__(self) -> str:
        states = ",".join(r.state.value for r in self.replicas)
        return (
            f"ClusterSupervisor(listen={self.options.listen!r}, replicas=[{states}], "
            f"slots={len(self._slots)}, reloads={self.reloads})"
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

    @property
    def slots(self) -> tuple[int, ...]:
        """The replica ports nginx's upstream lists, in slot order (spare ones included)."""
        return tuple(self._slots.ports)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the replicas, wait for them to be ready, write nginx.conf and start nginx."""
        binary = find_nginx(self._nginx_binary)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        claim_run_dir(self.run_dir)
        self._slots = SlotTable(self.options.ports(free_ports(self.options.slots)))
        self._checks.open()
        try:
            self._slots.hold_spares(used=self.options.replicas)
            self.replicas = [
                self._new_replica(i, port)
                for i, port in enumerate(self._slots.ports[: self.options.replicas])
            ]
            for replica in self.replicas:
                replica.start()
            await asyncio.gather(*(self._checks.wait_ready(r) for r in self.replicas))
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
        logger.info(
            "cluster up: nginx on %s, %d replicas in %d slots",
            self.options.listen,
            len(self.replicas),
            len(self._slots),
        )

    def _new_replica(self, index: int, port: int) -> Replica:
        """A (not yet started) replica for slot *index*."""
        return Replica(
            index,
            port,
            self._command,
            log_dir=self.run_dir / "logs",
            env={
                "REDLINE_DATA_DIR": str(self.run_dir / f"replica-{index}"),
                # nginx sets X-Redline-Edge-Id on every request: a retry is counted once.
                "REDLINE_TRUST_EDGE_ID": "true",
                **self._env,
            },
            timer=self._timer,
        )

    async def stop(self) -> None:
        """Stop nginx gracefully, then SIGTERM (drain) every replica; nothing is left running."""
        await self._operations.cancel()
        if self.nginx is not None:
            await self.nginx.quit(self.options.stop_timeout)
        await asyncio.gather(*(r.stop(self.options.stop_timeout) for r in self.replicas))
        self._slots.release()
        await self._checks.aclose()
        if self.replicas:
            self._write_status()
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / SUPERVISOR_PID_FILE).unlink()

    async def serve(self, stop: asyncio.Event, *, handle_signals: bool = False) -> None:
        """Health-check until *stop* is set.

        With *handle_signals*, SIGHUP starts a rolling restart, SIGUSR1 scales to the count in
        ``RUN_DIR/scale.request`` (``redline cluster scale N``), SIGINT/SIGTERM set *stop*.
        """
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGHUP, self.request_rolling_restart)
            loop.add_signal_handler(signal.SIGUSR1, self._scale_from_request)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                await self.check_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.health.interval)
        finally:
            if handle_signals:
                for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    def request_rolling_restart(self) -> None:
        """Start a rolling restart in the background (after any operation still running)."""
        self._operations.submit(self.rolling_restart())

    def request_scale(self, replicas: int) -> None:
        """Start :meth:`scale` in the background (after any operation still running)."""
        self._operations.submit(self.scale(replicas))

    def _scale_from_request(self) -> None:
        """SIGUSR1: scale to the count ``redline cluster scale`` wrote into the run dir."""
        try:
            replicas = read_scale_request(self.run_dir)
        except ClusterError:
            logger.exception("ignoring SIGUSR1")
            return
        self.request_scale(replicas)

    # -- health checks ---------------------------------------------------------------------

    async def check_once(self) -> None:
        """One round: detect crashes, restart due replicas in place, probe the rest."""
        now = self._timer()
        await asyncio.gather(
            *(
                self._checks.check(r, now, self._busy)
                for r in self.replicas
                if r.index not in self._busy
            )
        )
        if now - self._last_metrics >= 2.0:
            self._last_metrics = now
            await asyncio.gather(*(self._checks.fetch_metrics(r) for r in self.replicas))
        self._write_status()

    async def _settle(self) -> None:
        """Give nginx time to take a (re)started replica back.

        nginx skips a server for ``fail_timeout`` after its last refused connect, measured on
        its whole-second clock (so up to one second more); the next replica leaves only once
        this one is serving again.
        """
        await asyncio.sleep(max(self.options.drain_seconds, self.options.fail_timeout + 1.0))

    # -- rolling restart -------------------------------------------------------------------

    async def rolling_restart(self) -> None:
        """Restart every replica, one at a time, without failing a client request.

        SIGTERM makes the server close its listener and finish its in-flight requests; nginx
        retries whatever it cannot deliver on another replica. No nginx reload.
        """
        async with self._restart_lock:
            logger.info("rolling restart of %d replicas", len(self.replicas))
            for replica in list(self.replicas):
                self._busy.add(replica.index)
                try:
                    replica.state = ReplicaState.RESTARTING
                    self._write_status()
                    await replica.stop(self.options.stop_timeout)
                    replica.restarts += 1
                    replica.start()
                    replica.state = ReplicaState.RESTARTING
                    self._write_status()
                    if not await self._checks.wait_ready(replica):
                        logger.error("replica %d not ready after restart", replica.index)
                        continue
                    await self._settle()
                finally:
                    self._busy.discard(replica.index)
                    self._write_status()

    # -- scaling ---------------------------------------------------------------------------

    async def scale(self, replicas: int) -> None:
        """Run *replicas* replicas: fill spare slots first, drain the highest slots to shrink.

        Within ``max_replicas`` nginx is never reloaded; growing past it adds slots to the
        upstream and reloads nginx once (which closes idle client keep-alive connections).
        Raises ClusterError when a new replica does not become ready (its slot is freed).
        """
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        async with self._restart_lock:
            while len(self.replicas) > replicas:
                await self._remove(self.replicas[-1])
            added: list[Replica] = []
            while len(self.replicas) < replicas:
                index = len(self.replicas)
                replica = self._new_replica(index, self._slots.take(index))
                self.replicas.append(replica)
                replica.start()
                added.append(replica)
            ready = await asyncio.gather(*(self._checks.wait_ready(r) for r in added))
            failed = [r.index for r, ok in zip(added, ready, strict=True) if not ok]
            if failed:
                for replica in reversed(added):
                    await self._remove(replica)
                raise ClusterError(
                    f"replicas {failed} not ready within {self.options.startup_timeout}s; "
                    f"see {self.run_dir / 'logs'}"
                )
            if len(self._slots) > self._nginx_slots:
                await self._reload()
            if added:
                await self._settle()
            self._write_status()
            logger.info("scaled to %d replicas (%d slots)", len(self.replicas), len(self._slots))

    async def _remove(self, replica: Replica) -> None:
        """Drain and stop the last replica, and hold its port as a spare slot."""
        self._busy.add(replica.index)
        try:
            replica.state = ReplicaState.RESTARTING
            await replica.stop(self.options.stop_timeout)
        finally:
            self._busy.discard(replica.index)
        self.replicas.remove(replica)
        try:
            self._slots.hold(replica.port)
        except ClusterError:
            logger.exception("slot %d (port %d) is left unheld", replica.index, replica.port)

    # -- nginx -----------------------------------------------------------------------------

    async def _write_config(self) -> None:
        """Render, ``nginx -t`` and install nginx.conf listing every slot."""
        if self.nginx is None:
            return
        servers = [UpstreamServer("127.0.0.1", port) for port in self._slots.ports]
        await self.nginx.write_and_check(render_nginx_conf(self.options.nginx_options(servers)))
        self._nginx_slots = len(servers)

    async def _reload(self) -> None:
        """Install the config for the current slots and reload nginx gracefully."""
        if self.nginx is None or not self.nginx.running:
            return
        await self._write_config()
        await self.nginx.reload()
        self.reloads += 1
        logger.info("nginx reloaded: %d slots", len(self._slots))

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
