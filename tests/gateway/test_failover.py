"""Two real upstream processes behind a gateway process: one killed mid-load costs no client
request; both dead, cached inputs are still served and the rest get a JSON 5xx in time."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.gateway._procs import gateway, upstream_server

pytestmark = pytest.mark.slow

TIMEOUT = 5.0


async def test_upstream_killed_mid_load_then_both_down() -> None:
    with upstream_server() as a, upstream_server() as b:
        specs = [
            f"{name}={server.url}?model=hashing&dimension=384&timeout={TIMEOUT}"
            for name, server in (("a", a), ("b", b))
        ]
        with gateway(*specs) as gw:
            statuses: list[int] = []
            done = asyncio.Event()
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:

                async def worker(n: int) -> None:
                    for i in range(30):
                        text = f"load {n} {i} {uuid.uuid4().hex}"
                        inputs = [text, f"{text} second"] if i % 3 == 0 else text
                        body = {"model": "hashing", "input": inputs}
                        response = await client.post("/v1/embeddings", json=body)
                        statuses.append(response.status_code)
                        if len(statuses) == 60:
                            done.set()

                async def killer() -> None:
                    await done.wait()
                    await asyncio.to_thread(a.kill)

                await asyncio.gather(killer(), *(worker(n) for n in range(8)))
                failed = [s for s in statuses if s != 200]
                assert len(statuses) == 240
                assert failed == []

                kept = await client.post(
                    "/v1/embeddings", json={"model": "hashing", "input": "kept"}
                )
                assert kept.status_code == 200
                await asyncio.to_thread(b.kill)

                again = await client.post(
                    "/v1/embeddings", json={"model": "hashing", "input": ["kept", "kept"]}
                )
                assert again.status_code == 200, again.text
                assert again.headers["x-cache"] == "hit"
                started = time.monotonic()
                fresh = await client.post(
                    "/v1/embeddings", json={"model": "hashing", "input": ["kept", "never seen"]}
                )
                elapsed = time.monotonic() - started
                assert fresh.status_code in (502, 503, 504), fresh.text
                error = fresh.json()["error"]
                assert "a:" in error["message"]
                assert "b:" in error["message"]
                assert elapsed < TIMEOUT + 1.0
