"""A ``redline serve`` subprocess on a free loopback port (upstream or gateway), stopped by pid."""

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
from redline.serve.testing import HashingModel

HASHING = "redline.serve.testing:create_hashing_model"


class Serve:
    """``python -m redline serve ARGS`` with a private data dir; waits for ``/ready``."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="redline-gw-test-")
        self.log_path = Path(self._dir.name) / "server.log"
        self.args = [sys.executable, "-m", "redline", "serve", "--host", "127.0.0.1"]
        self.args += ["--port", str(self.port), "--data-dir", self._dir.name, *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 90.0) -> Serve:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log, env=self.env)
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redline serve exited {self.proc.returncode}: {self.log()}")
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
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def close(self) -> None:
        self.stop()
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


def gateway(
    *upstreams: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Serve:
    """A gateway: a local hashing model named ``local`` plus *upstreams* (``NAME=URL...``)."""
    args = ["--model", HASHING]
    for spec in upstreams:
        args += ["--upstream", spec]
    return Serve(*args, *extra, env={"REDLINE_HASHING_NAME": "local", **(env or {})})


def upstream_server(env: dict[str, str] | None = None, port: int | None = None) -> Serve:
    """An upstream: ``redline serve`` with the hashing model (named ``hashing``)."""
    return Serve("--model", HASHING, "--cache-url", "none", env=env, port=port)


def create_second_hashing_model() -> HashingModel:
    """A second hashing model for ``--model`` (named by ``REDLINE_SECOND_NAME``, ``second``)."""
    return HashingModel(384, name=os.environ.get("REDLINE_SECOND_NAME") or "second")
