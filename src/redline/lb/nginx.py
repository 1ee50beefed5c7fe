"""Run nginx under a private prefix: find the binary, ``nginx -t``, start, reload, quit.

Every call passes ``-p RUN_DIR -c RUN_DIR/nginx.conf -e RUN_DIR/logs/error.log`` so the
system's ``/etc/nginx`` and ``/var/log/nginx`` are never touched::

    nginx = NginxMaster(find_nginx(), run_dir)
    await nginx.write_and_check(conf_text)
    await nginx.start(port=8080)
    await nginx.reload()
    await nginx.quit()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from redline.exceptions import NginxError

__all__ = ["NGINX_MISSING_HINT", "NginxMaster", "check_nginx_conf", "find_nginx"]

logger = logging.getLogger(__name__)

NGINX_MISSING_HINT = (
    "nginx not found: install it (apt-get install nginx) or run make test / make run"
)


def find_nginx(explicit: str | None = None) -> str:
    """Path of the nginx binary (*explicit*, ``$PATH``, then the usual sbin dirs).

    Raises NginxError with a one-line install hint when there is none.
    """
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise NginxError(f"nginx not found at {explicit!r}: {NGINX_MISSING_HINT}")
    found = shutil.which("nginx")
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/nginx/sbin"):
        candidate = os.path.join(directory, "nginx")
        if os.access(candidate, os.X_OK):
            return candidate
    raise NginxError(NGINX_MISSING_HINT)


def prepare_prefix(run_dir: Path) -> None:
    """Create the ``logs/`` and ``temp/`` directories nginx expects under its prefix."""
    for sub in ("logs", "temp"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)


def _base_args(binary: str, run_dir: Path, conf: Path) -> list[str]:
    """Arguments that pin nginx to the run directory."""
    return [binary, "-p", f"{run_dir}/", "-c", str(conf), "-e", str(run_dir / "logs" / "error.log")]


def check_nginx_conf(binary: str, run_dir: Path, conf: Path | None = None) -> None:
    """Run ``nginx -t`` on *conf* (default ``RUN_DIR/nginx.conf``); raise NginxError if rejected."""
    run_dir = run_dir.resolve()
    conf = conf or run_dir / "nginx.conf"
    prepare_prefix(run_dir)
    try:
        done = subprocess.run(
            [*_base_args(binary, run_dir, conf), "-t", "-q"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        raise NginxError(f"cannot run {binary}: {exc}") from exc
    if done.returncode != 0:
        raise NginxError(f"nginx rejected {conf}: {done.stderr.strip()}")


class NginxMaster:
    """One nginx master process in the foreground (``daemon off;``), owned by the caller.

    >>> master = NginxMaster("/usr/sbin/nginx", Path(".redline/cluster"))
    >>> master.running
    False
    """

    def __init__(self, binary: str, run_dir: Path) -> None:
        self.binary = binary
        self.run_dir = run_dir.resolve()
        self.conf = self.run_dir / "nginx.conf"
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.pid if self.running else None
        return f"NginxMaster(run_dir={str(self.run_dir)!r}, pid={pid}, running={self.running})"

    @property
    def running(self) -> bool:
        """Whether the master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the master process, if started."""
        return None if self._proc is None else self._proc.pid

    async def write_and_check(self, text: str) -> None:
        """Write *text* as the config (atomically) after ``nginx -t`` accepts it."""
        prepare_prefix(self.run_dir)
        candidate = self.run_dir / "nginx.conf.next"
        candidate.write_text(text, encoding="utf-8")
        await asyncio.to_thread(check_nginx_conf, self.binary, self.run_dir, candidate)
        os.replace(candidate, self.conf)

    async def start(self, port: int, timeout: float = 15.0) -> None:
        """Start the master with the current config and wait until *port* accepts connections."""
        if self.running:
            raise NginxError("nginx is already running")
        proc = self._proc = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NginxError(
                    f"nginx exited with {proc.returncode} at start; see {self.run_dir}/logs/"
                )
            if await asyncio.to_thread(_port_open, port):
                return
            await asyncio.sleep(0.05)
        raise NginxError(f"nginx did not listen on port {port} within {timeout}s")

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the master process in its own session, output to ``logs/nginx.stderr.log``."""
        prepare_prefix(self.run_dir)
        with (self.run_dir / "logs" / "nginx.stderr.log").open("ab") as log:
            try:
                return subprocess.Popen(
                    _base_args(self.binary, self.run_dir, self.conf),
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                raise NginxError(f"cannot start {self.binary}: {exc}") from exc

    async def reload(self) -> None:
        """Graceful reload (``-s reload``): new workers take the new config, old ones finish."""
        if not self.running:
            raise NginxError("nginx is not running")
        done = await asyncio.to_thread(
            subprocess.run,
            [*_base_args(self.binary, self.run_dir, self.conf), "-s", "reload"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise NginxError(f"nginx reload failed: {done.stderr.strip()}")

    async def quit(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (``SIGQUIT``, as ``-s quit``); SIGKILL the group past *timeout*."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                logger.warning("nginx did not quit within %ss; killing it", timeout)
                _kill_group(proc.pid)
                await asyncio.to_thread(proc.wait, 10)
        _kill_group(proc.pid)  # stray workers, if the master died hard
        self._proc = None


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group if anything is left in it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:*port*."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
