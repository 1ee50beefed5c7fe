"""A ``redline serve`` subprocess on a free loopback port, for the serve and gateway tests and
the benchmarks (:class:`redline.bench.server_process.ServerProcess` runs on it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from redline._ports import free_port
from redline._services.processes import stop_process

__all__ = ["HASHING", "Serve"]

HASHING = "redline.serve.testing:create_hashing_model"


class Serve:
    """``python -m redline serve ARGS`` on a free loopback port; waits for ``/ready``.

    ``home`` is the folder the process runs in: its working directory (a ``--model`` factory
    module put there is importable), its data dir (``home/data``) and its log
    (``home/serve-PORT.log``, stdout and stderr). ``None``: a private temporary data dir,
    removed on :meth:`close`, which also holds the log; the working directory is this one.
    """

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        home: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if home is None:
            self._dir = tempfile.TemporaryDirectory(prefix="redline-serve-")
            data_dir = Path(self._dir.name)
            self.log_path = data_dir / "server.log"
        else:
            data_dir = home / "data"
            self.log_path = home / f"serve-{self.port}.log"
        self.cwd = home
        self.args = [sys.executable, "-m", "redline", "serve", "--host", "127.0.0.1"]
        self.args += ["--port", str(self.port), "--data-dir", str(data_dir), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process, not waiting for it (:meth:`start` waits)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=log, env=self.env, cwd=self.cwd
            )
        return self.proc

    def start(self, ready_timeout: float = 90.0) -> Serve:
        proc = self.spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"redline serve exited {proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"redline serve not ready after {ready_timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: the process dies without closing anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
