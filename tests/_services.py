"""Real services for the test suite: Redis, a 6-node Redis Cluster, PostgreSQL, nginx.

Each one is started by the test harness on free loopback ports in a private temporary
directory and stopped by the fixture that owns it (even when tests fail). Nothing here
depends on a hand-started process or on the machine's own services.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_running: set[RedisServer | PostgresServer] = set()


def _die_with_parent() -> None:
    """In the child: the kernel SIGKILLs it if the test process dies (no orphan servers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _stop_leftovers() -> None:
    """Whatever a fixture did not stop (an interrupted run) is stopped at interpreter exit."""
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback port; with ``with_bus`` also ``port + 10000`` (Redis Cluster bus)."""
    for _ in range(1000):
        port = random.randint(20000, 50000)
        if port_is_free(port) and (not with_bus or port_is_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


def wait_for_port(
    port: int,
    timeout: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = HOST,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def require_binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in (*extra_dirs, "/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"{name} is not installed; run `make test`, which installs it")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class RedisServer:
    """One redis-server process on a loopback port; can be killed and restarted on that port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        cluster: bool = False,
        workdir: Path | None = None,
        bind: tuple[str, ...] = (HOST,),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``bind``: the loopback addresses to listen on (readiness is checked on the
        first); ``extra_args``: more ``redis-server`` options, e.g.
        ``("--requirepass", "pw")`` (``cli`` then needs ``"-a", "pw"``)."""
        self.port = port or free_port(with_bus=cluster)
        self.cluster = cluster
        self.bind = bind
        self.extra_args = extra_args
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"redline-redis-{self.port}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = require_binary("redis-server")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            *self.bind,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{self.port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-announce-ip",
                HOST,
            ]
        args += self.extra_args
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        _running.add(self)
        wait_for_port(self.port, proc=self.proc, host=self.bind[0])
        return self

    def stop(self) -> None:
        _running.discard(self)
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [require_binary("redis-cli"), "-h", HOST, "-p", str(self.port), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout


class RedisClusterServers:
    """A real Redis Cluster: 3 masters + 3 replicas created with ``redis-cli --cluster create``."""

    def __init__(self, nodes: int = 6) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="redline-cluster-"))
        self.nodes = [RedisServer(cluster=True, workdir=self._node_dir(i)) for i in range(nodes)]

    def _node_dir(self, index: int) -> Path:
        path = self.workdir / f"node{index}"
        path.mkdir()
        return path

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node (the form ``cache_from_url`` takes)."""
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, p) for p in self.ports]

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                require_binary("redis-cli"),
                "--cluster",
                "create",
                *(f"{HOST}:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [node.cli("cluster", "info") for node in self.nodes]
            views = [self.roles(node) for node in self.nodes]
            if (
                all("cluster_state:ok" in info for info in infos)
                and all("cluster_slots_assigned:16384" in info for info in infos)
                and all(view.count("master") == 3 and view.count("slave") == 3 for view in views)
            ):
                return self
            time.sleep(0.2)
        raise TimeoutError("redis cluster did not reach cluster_state:ok")

    @staticmethod
    def roles(node: RedisServer) -> list[str]:
        """``master`` / ``slave`` for every node, as *node* sees the cluster."""
        roles = []
        for line in node.cli("cluster", "nodes").splitlines():
            flags = line.split()[2].split(",")
            roles += [f for f in flags if f in ("master", "slave")]
        return roles

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    return require_binary(name)


class PostgresServer:
    """A private PostgreSQL (initdb) on a loopback port, trust auth, database ``redline``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="redline-pg-"))
        self.datadir = self.workdir / "data"
        self.user = "postgres"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        cmd = list(args)
        if self._as_root:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, timeout=120, **kw)  # type: ignore[call-overload]

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/redline"

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.workdir / "pg.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.workdir} -c listen_addresses={HOST} -c fsync=off",
            "start",
        )
        _running.add(self)
        self._run(_pg_bin("createdb"), "-h", HOST, "-p", str(self.port), "-U", self.user, "redline")
        return self

    def stop(self) -> None:
        _running.discard(self)
        with contextlib.suppress(Exception):
            self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
