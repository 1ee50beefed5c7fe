"""End to end with real `redline serve` replicas (HashingModel unless the model is the point)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import httpx
import pytest

from redline.lb import ReplicaState, read_status, serve_command
from tests.lb.conftest import ClusterFactory, base_url, load, wait_until

HASHING = "redline.serve.testing:create_hashing_model"


async def test_kill_9_one_of_three_real_replicas_under_load(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=3, command=serve_command(model=HASHING, cache_url="none"))
    victim = sup.replicas[2]
    old_pid = victim.pid
    assert old_pid is not None

    async def kill_at(i: int) -> None:
        if i == 300:
            os.kill(old_pid, signal.SIGKILL)

    result = await load(base_url(sup) + "/v1/embeddings", 2000, concurrency=8, on_progress=kill_at)
    assert result.failures == 0, (result.statuses, result.errors[:5])
    assert sum(result.statuses.values()) == 2000
    # the victim was restarted on its own port
    await wait_until(lambda: victim.restarts >= 1 and victim.state is ReplicaState.UP, 60)
    assert victim.pid not in (None, old_pid)
    assert read_status(sup.run_dir).replicas[2].restarts >= 1
    assert sup.reloads == 0  # restarted in place: nginx's passive checks covered the gap


async def test_rolling_restart_of_real_replicas_under_load(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=3, command=serve_command(model=HASHING, cache_url="none"))
    old_pids = [r.pid for r in sup.replicas]
    url = base_url(sup) + "/v1/embeddings"
    roll = asyncio.create_task(sup.rolling_restart())
    result = await load(url, 200, concurrency=4)
    while not roll.done():  # keep the load on for the whole roll
        more = await load(url, 100, concurrency=4)
        result.statuses.update(more.statuses)
        result.errors += more.errors
    await roll
    assert result.failures == 0, (result.statuses, result.errors[:5])
    assert sum(result.statuses.values()) >= 300
    assert all(r.restarts == 1 and r.state is ReplicaState.UP for r in sup.replicas)
    assert all(r.pid != old for r, old in zip(sup.replicas, old_pids, strict=True))
    # every replica took traffic again after the roll
    after = await load(url, 60, concurrency=3)
    assert after.failures == 0
    assert len(after.upstreams) == 3


async def test_shared_redis_cache_hit_through_another_replica(
    start_cluster: ClusterFactory, redis_url: str
) -> None:
    sup = await start_cluster(replicas=2, command=serve_command(model=HASHING, cache_url=redis_url))
    text = f"shared-cache-{uuid.uuid4().hex}"
    seen: dict[str, str] = {}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        for _ in range(6):  # round robin alternates replicas
            response = await client.post(base_url(sup) + "/v1/embeddings", json={"input": text})
            assert response.status_code == 200
            seen.setdefault(response.headers["x-upstream"], response.headers["x-cache"])
            if len(seen) == 2:
                break
    assert len(seen) == 2, seen
    assert sorted(seen.values()) == ["hit", "miss"]  # computed by one, a hit on the other


async def test_requests_served_comes_from_replica_metrics(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=2, command=serve_command(model=HASHING, cache_url="none"))
    result = await load(base_url(sup) + "/v1/embeddings", 40, concurrency=2)
    assert result.failures == 0
    sup._last_metrics = -1e9  # force a scrape on the next round
    await sup.check_once()
    served = [r.requests_served for r in read_status(sup.run_dir).replicas]
    assert served == [20, 20]


@pytest.mark.slow
@pytest.mark.model
async def test_real_model_through_nginx(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=1, command=serve_command(cache_url="none"))
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
        response = await client.post(
            base_url(sup) + "/v1/embeddings",
            json={"input": ["the cat sat on the mat", "a feline rested on the rug"]},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-upstream"] == f"127.0.0.1:{sup.replicas[0].port}"
    body = response.json()
    vectors = [item["embedding"] for item in body["data"]]
    assert [len(v) for v in vectors] == [384, 384]
    a, b = vectors
    cosine = sum(x * y for x, y in zip(a, b, strict=True)) / (
        sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5
    )
    assert cosine > 0.5  # paraphrases are close under the real model (not the hashing stand-in)
    assert body["model"] != "hashing"


def test_serve_command_runs_this_interpreter() -> None:
    argv = serve_command(model=HASHING, cache_url="none", workers=2)(1, 8123)
    assert argv[:4] == [sys.executable, "-m", "redline", "serve"]
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--workers") + 1] == "2"
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        serve_command(workers=0)
