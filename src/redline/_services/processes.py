"""Ports, binaries and child processes for the services the tests and benchmarks start."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Protocol

__all__ = [
    "HOST",
    "die_with_parent",
    "free_port",
    "frozen_for",
    "port_is_free",
    "require_binary",
    "stop_process",
    "track",
    "untrack",
    "wait_for_port",
]

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_running: set[_Stoppable] = set()
_atexit_registered = False


def die_with_parent() -> None:
    """In the child (``preexec_fn``): the kernel SIGKILLs it if its parent dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def track(server: _Stoppable) -> None:
    """Stop *server* at interpreter exit unless its owner stops it first (an interrupted run)."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_stop_leftovers)
        _atexit_registered = True
    _running.add(server)


def untrack(server: _Stoppable) -> None:
    """*server* is being stopped by its owner."""
    _running.discard(server)


def _stop_leftovers() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


def port_is_free(port: int) -> bool:
    """Whether *port* can be bound on the loopback address now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 where unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port; with ``with_bus`` also ``port + 10000`` (Redis Cluster bus).

    Chosen below the kernel's ephemeral range, so that no outgoing connection of a busy
    machine can take it between this check and the server's bind."""
    highest = min(_ephemeral_low(), 50000) - 1 - (10000 if with_bus else 0)
    for _ in range(1000):
        port = random.randint(10000, max(highest, 12000))
        if port_is_free(port) and (not with_bus or port_is_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


def wait_for_port(
    port: int,
    timeout: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = HOST,
) -> None:
    """Return once *host*:*port* accepts a connection; raise if *proc* exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def require_binary(name: str, *extra_dirs: str) -> str:
    """The path of the executable *name* (PATH, *extra_dirs*, then the sbin directories)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in (*extra_dirs, "/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"{name} is not installed; run `make test`, which installs it")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM *proc*, and SIGKILL it if it has not exited after *timeout* seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


async def frozen_for(pid: int, seconds: float) -> tuple[float, float]:
    """SIGSTOP process *pid* for *seconds*, SIGCONT even if cancelled; ``time.monotonic()``
    when it froze and when it thawed."""
    frozen_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return frozen_at, time.monotonic()
