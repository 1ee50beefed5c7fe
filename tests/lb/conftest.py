"""Fixtures for the lb tests: stand-in replicas, started clusters, and a small load loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from redline.lb import ClusterOptions, ClusterSupervisor, HealthCheck, ReplicaCommand

STANDIN = Path(__file__).with_name("standin_app.py")
REPO_SRC = Path(__file__).resolve().parents[2] / "src"


def standin_command(index: int, port: int) -> list[str]:
    return [sys.executable, str(STANDIN), str(port), str(index)]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes that run redline from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_SRC), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    upstreams: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    done: int = 0

    @property
    def failures(self) -> int:
        return len(self.errors) + sum(n for code, n in self.statuses.items() if code != 200)


async def load(
    url: str,
    total: int,
    *,
    concurrency: int = 8,
    body: Callable[[int], dict[str, Any]] = lambda i: {"input": f"text {i}"},
    headers: Callable[[int], dict[str, str]] = lambda i: {},
    on_progress: Callable[[int], Awaitable[None]] | None = None,
    deadline: float = 120.0,
    keepalive: bool = False,
) -> LoadResult:
    """POST *total* requests with *concurrency* workers; never raises for a failed request.

    Without *keepalive* every request opens its own connection to nginx (new-connection
    clients); :func:`keepalive_load` is the load of clients that reuse their connections.
    """
    result = LoadResult()
    counter = iter(range(total))
    limits = httpx.Limits(max_keepalive_connections=concurrency if keepalive else 0)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                try:
                    response = await client.post(url, json=body(i), headers=headers(i))
                except httpx.HTTPError as exc:
                    result.errors.append(repr(exc))
                    continue
                result.statuses[response.status_code] += 1
                result.upstreams[response.headers.get("x-upstream", "")] += 1
                if on_progress is not None:
                    await on_progress(i)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), deadline)
    return result


ClusterFactory = Callable[..., Awaitable[ClusterSupervisor]]


@pytest.fixture
async def start_cluster(nginx_binary: str, tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Start a supervised cluster (stand-in replicas by default), serving in the background."""
    running: list[tuple[ClusterSupervisor, asyncio.Event, asyncio.Task[None]]] = []

    async def factory(
        *, command: ReplicaCommand = standin_command, env: dict[str, str] | None = None, **kw: Any
    ) -> ClusterSupervisor:
        from tests._services import free_port

        kw.setdefault("listen", f"127.0.0.1:{free_port()}")
        kw.setdefault("run_dir", tmp_path / f"cluster{len(running)}")
        kw.setdefault("health", HealthCheck(interval=0.25, timeout=1.0, fall=2, rise=1))
        kw.setdefault("drain_seconds", 0.5)
        kw.setdefault("backoff_base", 0.2)
        kw.setdefault("startup_timeout", 60.0)
        supervisor = ClusterSupervisor(
            ClusterOptions(**kw), command=command, nginx_binary=nginx_binary, env=env
        )
        await supervisor.start()
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.serve(stop))
        running.append((supervisor, stop, task))
        return supervisor

    yield factory
    for supervisor, stop, task in running:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await supervisor.stop()


def base_url(supervisor: ClusterSupervisor) -> str:
    return f"http://{supervisor.options.listen}"


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll *predicate* until true; fail the test past *timeout* (a 'not stuck' bound only)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def keepalive_load(
    base: str,
    total: int,
    *,
    concurrency: int = 32,
    on_progress: Callable[[int], Awaitable[None]] | None = None,
    until: asyncio.Event | None = None,
    deadline: float = 240.0,
) -> LoadResult:
    """POST /v1/embeddings the way real clients do: every worker keeps one connection alive.

    Half the workers share an ``httpx.AsyncClient`` pool, half an ``openai.AsyncOpenAI`` client
    with ``max_retries=0`` (its retries would hide a reset). Stops after *total* requests, or,
    with *until*, once *until* is set and at least *total* were sent. Never raises for a failed
    request: failures are counted in the result.
    """
    import openai

    result = LoadResult()
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def next_index() -> int | None:
        nonlocal sent
        if sent >= total and (until is None or until.is_set()):
            return None
        sent += 1
        return sent - 1

    async def finish(i: int) -> None:
        result.done += 1
        if on_progress is not None:
            await on_progress(i)

    async with (
        httpx.AsyncClient(trust_env=False, timeout=30.0, limits=limits) as plain,
        httpx.AsyncClient(trust_env=False, timeout=30.0, limits=limits) as sdk_http,
    ):
        sdk = openai.AsyncOpenAI(
            base_url=base + "/v1",
            api_key="unused",
            max_retries=0,
            # the SDK takes an httpx client at run time; its annotation names only httpx2's
            http_client=sdk_http,  # type: ignore[arg-type]
        )

        async def httpx_worker() -> None:
            while (i := next_index()) is not None:
                try:
                    response = await plain.post(base + "/v1/embeddings", json={"input": f"t {i}"})
                except httpx.HTTPError as exc:
                    result.errors.append(f"httpx: {exc!r}")
                else:
                    result.statuses[response.status_code] += 1
                    result.upstreams[response.headers.get("x-upstream", "")] += 1
                await finish(i)

        async def openai_worker() -> None:
            while (i := next_index()) is not None:
                try:
                    raw = await sdk.embeddings.with_raw_response.create(
                        input=f"t {i}", model="hashing", encoding_format="float"
                    )
                except openai.APIError as exc:
                    result.errors.append(f"openai: {exc!r}")
                else:
                    result.statuses[raw.http_response.status_code] += 1
                    result.upstreams[raw.headers.get("x-upstream", "")] += 1
                    assert len(raw.parse().data) == 1
                await finish(i)

        workers = [httpx_worker() for _ in range(concurrency // 2)]
        workers += [openai_worker() for _ in range(concurrency - concurrency // 2)]
        await asyncio.wait_for(asyncio.gather(*workers), deadline)
    return result
