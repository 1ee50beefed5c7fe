"""The status file the supervisor keeps in its run directory (``status.json``).

``redline cluster status`` reads it; nothing has to talk to the supervisor process::

    status = read_status(Path(".redline/cluster"))
    [r.state for r in status.replicas]      # ['up', 'up', 'down']
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redline.exceptions import ClusterError

__all__ = [
    "SCALE_REQUEST_FILE",
    "STATUS_FILE",
    "SUPERVISOR_PID_FILE",
    "ClusterStatus",
    "ReplicaStatus",
    "claim_run_dir",
    "read_scale_request",
    "read_status",
    "read_supervisor_pid",
]

STATUS_FILE = "status.json"
SUPERVISOR_PID_FILE = "supervisor.pid"
SCALE_REQUEST_FILE = "scale.request"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica as last seen by the supervisor (``last_check`` is a Unix time)."""

    index: int
    port: int
    pid: int | None
    state: str
    restarts: int
    requests_served: int | None
    last_check: float | None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The whole cluster: where nginx listens, its pid, the strategy and every replica."""

    listen: str
    strategy: str
    supervisor_pid: int
    nginx_pid: int | None
    updated: float
    replicas: tuple[ReplicaStatus, ...]

    @property
    def up(self) -> int:
        """How many replicas are up."""
        return sum(r.state == "up" for r in self.replicas)

    def to_json(self) -> str:
        """Serialize for ``status.json``."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterStatus:
        """Parse ``status.json`` text; raise ClusterError if it is not a status document."""
        try:
            data: dict[str, Any] = json.loads(text)
            replicas = tuple(ReplicaStatus(**r) for r in data.pop("replicas"))
            return cls(**data, replicas=replicas)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ClusterError(f"malformed cluster status: {exc}") from exc

    def write(self, run_dir: Path) -> None:
        """Write atomically to ``run_dir/status.json``."""
        tmp = run_dir / (STATUS_FILE + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, run_dir / STATUS_FILE)


def read_status(run_dir: Path) -> ClusterStatus:
    """Read ``run_dir/status.json``; ClusterError if no supervisor has written one."""
    path = run_dir / STATUS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClusterError(f"no cluster status at {path}: is `redline cluster` running?") from None
    return ClusterStatus.from_json(text)


def read_supervisor_pid(run_dir: Path) -> int:
    """Pid of the supervisor running in *run_dir* (from its pid file)."""
    path = run_dir / SUPERVISOR_PID_FILE
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        raise ClusterError(
            f"no supervisor pid file at {path}: is `redline cluster` running?"
        ) from None
    except ValueError as exc:
        raise ClusterError(f"malformed pid file {path}") from exc


def claim_run_dir(run_dir: Path) -> None:
    """Write this process's pid file; ClusterError if a live supervisor already owns *run_dir*."""
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


def read_scale_request(run_dir: Path) -> int:
    """The replica count ``redline cluster scale N`` asked for (ClusterError if unreadable)."""
    path = run_dir / SCALE_REQUEST_FILE
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        raise ClusterError(f"no scale request at {path}") from None
    except ValueError as exc:
        raise ClusterError(f"malformed scale request {path}") from exc
