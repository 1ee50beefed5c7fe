"""Keep-alive clients (httpx pool and the OpenAI SDK) through replica death, roll and scale.

Real nginx, real ``redline serve`` replicas (HashingModel), 32 clients each reusing its
connection: not one request may fail while a replica is SIGKILLed, while every replica is
restarted in turn, or while replicas are added and removed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

from redline.lb import ReplicaState, serve_command
from tests.lb.conftest import ClusterFactory, base_url, keepalive_load, wait_until

HASHING = "redline.serve.testing:create_hashing_model"
TOTAL = 2000


def replicas() -> object:
    return serve_command(model=HASHING, cache_url="none")


async def test_sigkill_one_of_three_under_keepalive_load(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=3, command=replicas())
    victim = sup.replicas[1]
    old_pid, old_port = victim.pid, victim.port
    assert old_pid is not None
    conf = (sup.run_dir / "nginx.conf").read_text()

    async def kill_at(i: int) -> None:
        if i == TOTAL // 3:
            os.kill(old_pid, signal.SIGKILL)

    result = await keepalive_load(base_url(sup), TOTAL, on_progress=kill_at)
    assert result.failures == 0, (result.failures, result.statuses, result.errors[:5])
    assert result.done == TOTAL
    await wait_until(lambda: victim.restarts >= 1 and victim.state is ReplicaState.UP, 60)
    assert victim.pid not in (None, old_pid)
    assert sup.replicas[1] is victim
    assert victim.port == old_port
    assert sup.reloads == 0  # the failure path never reloads nginx
    assert (sup.run_dir / "nginx.conf").read_text() == conf


async def test_rolling_restart_under_keepalive_load(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=3, command=replicas())
    old_pids = [r.pid for r in sup.replicas]
    rolled = asyncio.Event()

    async def roll() -> None:
        try:
            await asyncio.sleep(0.5)
            await sup.rolling_restart()
        finally:
            rolled.set()

    roller = asyncio.create_task(roll())
    result = await keepalive_load(base_url(sup), TOTAL, until=rolled)
    await roller
    assert result.failures == 0, (result.failures, result.statuses, result.errors[:5])
    assert result.done >= TOTAL
    assert all(r.restarts == 1 and r.state is ReplicaState.UP for r in sup.replicas)
    assert all(r.pid != old for r, old in zip(sup.replicas, old_pids, strict=True))
    assert sup.reloads == 0
    after = await keepalive_load(base_url(sup), 300)
    assert after.failures == 0
    assert len(after.upstreams) == 3  # every restarted replica takes traffic again


async def test_scale_up_and_down_within_slots_under_keepalive_load(
    start_cluster: ClusterFactory,
) -> None:
    sup = await start_cluster(replicas=3, max_replicas=4, command=replicas())
    assert len(sup.slots) == 4
    scaled = asyncio.Event()
    seen_four: set[str] = set()

    async def scale() -> None:
        try:
            await asyncio.sleep(0.5)
            await sup.scale(4)
            probe = await keepalive_load(base_url(sup), 200, concurrency=4)
            seen_four.update(probe.upstreams)
            await sup.scale(2)
            for spare in sup.slots[2:]:  # held: nginx's connects are refused at once
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", spare), timeout=2).close()
            await sup.scale(3)
        finally:
            scaled.set()

    scaler = asyncio.create_task(scale())
    result = await keepalive_load(base_url(sup), TOTAL, until=scaled)
    await scaler
    assert result.failures == 0, (result.failures, result.statuses, result.errors[:5])
    assert f"127.0.0.1:{sup.slots[3]}" in seen_four  # the added replica took traffic
    assert [r.index for r in sup.replicas] == [0, 1, 2]
    assert sup.reloads == 0


async def test_scale_past_the_slots_reloads_nginx_once(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=1, command=replicas())
    await sup.scale(2)
    assert sup.reloads == 1
    assert len(sup.slots) == 2
    assert f"127.0.0.1:{sup.slots[1]}" in (sup.run_dir / "nginx.conf").read_text()
    result = await keepalive_load(base_url(sup), 100, concurrency=4)
    assert result.failures == 0
    assert len(result.upstreams) == 2
    await sup.scale(1)  # shrinking keeps the slot: no reload
    assert sup.reloads == 1
    await sup.scale(2)
    assert sup.reloads == 1
