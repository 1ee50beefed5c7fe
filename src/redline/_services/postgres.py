"""A private PostgreSQL server for the tests and benchmarks (initdb on a free loopback port)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from redline._services.processes import HOST, free_port, require_binary, track, untrack

__all__ = ["PostgresServer"]


def _pg_bin(name: str) -> str:
    """The newest installed PostgreSQL's *name* binary (initdb and pg_ctl are not on PATH)."""
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return installed[0] if installed else require_binary(name)


class PostgresServer:
    """A private PostgreSQL (initdb) on a loopback port, trust auth, database ``redline``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="redline-pg-"))
        self.datadir = self.workdir / "data"
        self.user = "postgres"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = list(args)
        if self._as_root:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, timeout=120)

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
        track(self)
        self._run(_pg_bin("createdb"), "-h", HOST, "-p", str(self.port), "-U", self.user, "redline")
        return self

    def stop(self) -> None:
        untrack(self)
        with contextlib.suppress(Exception):
            self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)
