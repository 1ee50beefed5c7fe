"""A ``redline serve`` subprocess on a free loopback port, for the server scenarios.

Example::

    async with ServerProcess(model="redline.serve.testing:create_hashing_model") as server:
        await run_load(LoadConfig(url=server.url, requests=100), Workload())
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from types import TracebackType

import aiohttp

from redline._services.serve import Serve
from redline.exceptions import BenchError

__all__ = ["ServerProcess"]


class ServerProcess:
    """Starts ``redline serve`` and waits for ``GET /ready`` without blocking the event loop;
    stops it on exit.

    ``model`` is a factory path (``None``: the server's default, the real model); ``cache_url``
    and ``max_batch_size`` are passed through when given. Each server gets a private
    temporary ``--data-dir`` (no state shared with other servers), removed on exit. The
    process itself is a :class:`~redline._services.serve.Serve`.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        cache_url: str | None = None,
        max_batch_size: int | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        args: list[str] = []
        if model is not None:
            args += ["--model", model]
        if cache_url is not None:
            args += ["--cache-url", cache_url]
        if max_batch_size is not None:
            args += ["--max-batch-size", str(max_batch_size)]
        self._serve = Serve(*args)
        self.port = self._serve.port
        self.url = self._serve.url
        self.args = self._serve.args
        self.ready_timeout = ready_timeout

    async def __aenter__(self) -> ServerProcess:
        # Popen returns at once (fork+exec); readiness is awaited asynchronously below.
        proc = self._serve.spawn()
        try:
            await self._wait_ready(proc)
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

    async def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last = self._serve.log().strip().splitlines()[-1:] or ["(no output)"]
                    raise BenchError(f"redline serve exited with {proc.returncode}: {last[0]}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.url}/ready", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise BenchError(f"redline serve on {self.url} not ready after {self.ready_timeout:g}s")

    def stop(self) -> None:
        """Terminate the server (kill after 10 s) and remove its data dir."""
        self._serve.close()

    def __repr__(self) -> str:
        proc = self._serve.proc
        state = "running" if proc is not None and proc.poll() is None else "stopped"
        return f"<ServerProcess {self.url} {state}>"
