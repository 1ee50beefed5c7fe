"""Real Redis for the tests and benchmarks: one server, or a 6-node Redis Cluster.

Each runs in a private temporary directory on free loopback ports until ``stop()``::

    server = RedisServer().start()          # server.url: redis://127.0.0.1:PORT
    cluster = RedisClusterServers().start()  # cluster.url: redis+cluster://...
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from redline._services.processes import (
    HOST,
    die_with_parent,
    free_port,
    require_binary,
    stop_process,
    track,
    untrack,
    wait_for_port,
)

__all__ = ["RedisClusterServers", "RedisServer"]


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
            preexec_fn=die_with_parent,
        )
        track(self)
        wait_for_port(self.port, proc=self.proc, host=self.bind[0])
        return self

    def stop(self) -> None:
        untrack(self)
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
    """A real Redis Cluster: 3 masters + 3 replicas created with ``redis-cli --cluster create``.

    ``wait_for_replicas()`` before killing a master, so that its replica can take over.
    """

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
        self.wait_until_ok()
        return self

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Return once every node reports ``cluster_state:ok`` with every slot assigned and
        sees half the nodes as masters, half as replicas (after ``start()`` or a fault)."""
        half = len(self.nodes) // 2
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [node.cli("cluster", "info") for node in self.nodes]
            views = [self.roles(node) for node in self.nodes]
            if (
                all("cluster_state:ok" in info for info in infos)
                and all("cluster_slots_assigned:16384" in info for info in infos)
                and all(view.count("master") == half == view.count("slave") for view in views)
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"redis cluster did not reach cluster_state:ok within {timeout}s")

    def wait_for_replicas(self, timeout: float = 60.0) -> None:
        """Return once every replica's link to its master is up and it holds as many keys as
        its master (a replica that never synced may not fail over; one behind would lose
        keys). It blocks: from a running event loop call it in ``asyncio.to_thread``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sizes: dict[int, int] = {}
            masters: dict[int, int] = {}
            linked = True
            for node in self.nodes:
                role = node.cli("role").splitlines()
                sizes[node.port] = int(node.cli("dbsize").strip())
                if role[0] == "slave":
                    masters[node.port] = int(role[2])
                    linked &= "master_link_status:up" in node.cli("info", "replication")
            if linked and all(
                sizes[replica] == sizes[master] for replica, master in masters.items()
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the cluster's replicas did not catch up within {timeout}s")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The node that replicates *master*."""
        for node in self.nodes:
            role = node.cli("role").splitlines()
            if role[0] == "slave" and int(role[2]) == master.port:
                return node
        raise LookupError(f"no replica of {master.port}")

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
