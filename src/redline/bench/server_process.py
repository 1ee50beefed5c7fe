"""A ``redline serve`` subprocess on a free loopback port, for the server scenarios.

Example::

    async with ServerProcess(model="redline.serve.testing:create_hashing_model") as server:
        await run_load(LoadConfig(url=server.url, requests=100), Workload())
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from types import TracebackType

import aiohttp

from redline._ports import free_port
from redline.exceptions import BenchError

__all__ = ["ServerProcess"]


class ServerProcess:
    """Starts ``redline serve`` and waits for ``GET /ready``; stops it on exit.

    ``model`` is a factory path (``None``: the server's default, the real model); ``cache_url``
    and ``max_batch_size`` are passed through when given. Each server gets a private
    temporary ``--data-dir``, removed on exit.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        cache_url: str | None = None,
        max_batch_size: int | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "redline", "serve", "--host", "127.0.0.1"]
        self.args += ["--port", str(self.port)]
        if model is not None:
            self.args += ["--model", model]
        if cache_url is not None:
            self.args += ["--cache-url", cache_url]
        if max_batch_size is not None:
            self.args += ["--max-batch-size", str(max_batch_size)]
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        # A private data dir: no state (SQLite registry, usage) shared with other servers.
        self._data_dir = tempfile.TemporaryDirectory(prefix="redline-bench-")
        self.args += ["--data-dir", self._data_dir.name]

    async def __aenter__(self) -> ServerProcess:
        # stderr goes to a file, not a pipe: a chatty server must never block on a full pipe.
        # Popen returns at once (fork+exec); readiness is awaited asynchronously below.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            self.args, stdout=subprocess.DEVNULL, stderr=self._log
        )
        try:
            await self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    self._log.seek(0)
                    stderr = self._log.read().decode(errors="replace")
                    last = stderr.strip().splitlines()[-1:] or ["(no output)"]
                    raise BenchError(
                        f"redline serve exited with {self._proc.returncode}: {last[0]}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.url}/ready", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise BenchError(f"redline serve on {self.url} not ready after {self.ready_timeout:g}s")

    def stop(self) -> None:
        """Terminate the server (kill after 10 s)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._log.close()
        self._data_dir.cleanup()

    def __repr__(self) -> str:
        state = "running" if self._proc is not None and self._proc.poll() is None else "stopped"
        return f"<ServerProcess {self.url} {state}>"
