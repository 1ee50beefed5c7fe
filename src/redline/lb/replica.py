"""One supervised replica process: start it, watch it, stop it, restart it.

The command line comes from a *command factory* (``(index, port) -> argv``) so the supervisor
runs real ``redline serve`` replicas by default and any stand-in app in tests::

    command = serve_command(model="redline.serve.testing:create_hashing_model")
    replica = Replica(0, 8001, command, log_dir=Path(".redline/cluster/logs"))
    replica.start()
    await replica.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from redline.exceptions import ClusterError

__all__ = ["Replica", "ReplicaCommand", "ReplicaState", "serve_command"]

logger = logging.getLogger(__name__)

ReplicaCommand = Callable[[int, int], Sequence[str]]
"""Build the argv of replica *index* listening on 127.0.0.1:*port*."""


class ReplicaState(enum.StrEnum):
    """Where a replica stands, as ``redline cluster status`` shows it."""

    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    RESTARTING = "restarting"
    STOPPED = "stopped"


def serve_command(
    *,
    model: str | None = None,
    cache_url: str | None = None,
    workers: int = 1,
    extra_args: Sequence[str] = (),
) -> ReplicaCommand:
    """Command factory for ``redline serve`` replicas on 127.0.0.1.

    >>> serve_command(model="m:f")(0, 8001)[-4:]
    ['--port', '8001', '--model', 'm:f']
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def build(index: int, port: int) -> list[str]:
        argv = [sys.executable, "-m", "redline", "serve", "--host", "127.0.0.1"]
        if workers != 1:
            argv += ["--workers", str(workers)]
        if cache_url is not None:
            argv += ["--cache-url", cache_url]
        argv += [*extra_args, "--port", str(port)]
        if model is not None:
            argv += ["--model", model]
        return argv

    return build


class Replica:
    """A replica subprocess in its own process group (so its workers die with it).

    State, check counters and timestamps are updated by the supervisor.
    """

    def __init__(
        self,
        index: int,
        port: int,
        command: ReplicaCommand,
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.index = index
        self.port = port
        self.command = command
        self.log_dir = log_dir
        self.env = dict(env or {})
        self._timer = timer
        self._proc: subprocess.Popen[bytes] | None = None
        self.state = ReplicaState.STOPPED
        self.successes = 0
        self.failures = 0
        self.restarts = 0
        self.crashes = 0
        self.last_check: float | None = None
        self.restart_at: float | None = None
        self.requests_served: int | None = None

    def __repr__(self) -> str:
        return (
            f"Replica(index={self.index}, port={self.port}, pid={self.pid}, "
            f"state={self.state.value!r}, restarts={self.restarts})"
        )

    @property
    def url(self) -> str:
        """Base URL of the replica."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Pid of the running process (None when not running)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def exited(self) -> bool:
        """Whether a process was started and has died on its own (a crash)."""
        return self._proc is not None and self._proc.poll() is not None

    def start(self) -> None:
        """Spawn the process (logs to ``log_dir/replica-<index>.log``); state becomes STARTING."""
        if self.alive:
            raise ClusterError(f"replica {self.index} is already running (pid {self.pid})")
        self._reap()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = list(self.command(self.index, self.port))
        env = {**os.environ, **self.env}
        with (self.log_dir / f"replica-{self.index}.log").open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ClusterError(f"cannot start replica {self.index} ({argv[0]}): {exc}") from exc
        self.state = ReplicaState.STARTING
        self.successes = self.failures = 0
        self.requests_served = None  # a new process: its counter is unknown until scraped
        logger.info("replica %d started on port %d (pid %d)", self.index, self.port, self._proc.pid)

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (the server drains), SIGKILL it past *timeout*."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                deadline = self._timer() + timeout
                while proc.poll() is None and self._timer() < deadline:
                    await asyncio.sleep(0.05)
                if proc.poll() is None:
                    logger.warning(
                        "replica %d ignored SIGTERM for %ss; killing", self.index, timeout
                    )
            self._reap()
        self.state = ReplicaState.STOPPED

    def _reap(self) -> None:
        """Kill whatever is left in the process group and collect the exit status."""
        proc = self._proc
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel owes us this
            logger.error("replica %d (pid %d) survived SIGKILL", self.index, proc.pid)
        self._proc = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send *sig* to a process group, ignoring an already-empty one."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
