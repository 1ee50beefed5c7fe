"""ClusterSupervisor, stand-in replicas, real nginx: balancing, health checks, restarts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redline.exceptions import ClusterError
from redline.lb import ClusterSupervisor, RateLimit, ReplicaState, Strategy, read_status
from tests.lb.conftest import ClusterFactory, base_url, load, wait_until


def upstream_of(supervisor: ClusterSupervisor, index: int) -> str:
    return f"127.0.0.1:{supervisor.replicas[index].port}"


async def test_round_robin_spreads_by_weight(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=2, weights=(3, 1))
    result = await load(base_url(sup) + "/v1/embeddings", 400, concurrency=4)
    assert result.failures == 0
    heavy, light = result.upstreams[upstream_of(sup, 0)], result.upstreams[upstream_of(sup, 1)]
    assert heavy + light == 400
    assert 2.2 <= heavy / light <= 4.0, (heavy, light)


async def test_hash_consistent_sends_a_key_to_one_replica(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=3, strategy=Strategy.HASH)
    url = base_url(sup) + "/v1/embeddings"
    chosen: dict[str, set[str]] = {}
    for key in (f"key-{k}" for k in range(12)):

        def headers(i: int, key: str = key) -> dict[str, str]:
            return {"X-Cache-Key": key}

        result = await load(url, 6, concurrency=2, headers=headers)
        assert result.failures == 0
        chosen[key] = set(result.upstreams)
    assert all(len(upstreams) == 1 for upstreams in chosen.values()), chosen
    # different keys do spread over the replicas
    assert len(set().union(*chosen.values())) >= 2
    # no key header: requests are still spread rather than pinned to one replica
    unkeyed = await load(url, 30, concurrency=2)
    assert unkeyed.failures == 0
    assert len(unkeyed.upstreams) >= 2


async def test_rate_limit_answers_429_beyond_the_rate(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=1, rate_limit=RateLimit("2r/s", burst=3, nodelay=True))
    result = await load(base_url(sup) + "/v1/embeddings", 30, concurrency=1)
    assert result.statuses[429] >= 20, result.statuses
    assert 1 <= result.statuses[200] <= 6, result.statuses
    # nginx's own health location is not rate limited
    async with httpx.AsyncClient(trust_env=False) as client:
        codes = [(await client.get(base_url(sup) + "/nginx-health")).status_code for _ in range(10)]
    assert codes == [200] * 10


async def test_unready_replica_is_routed_around_without_a_reload(
    start_cluster: ClusterFactory, tmp_path: Path
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    sup = await start_cluster(replicas=2, env={"STANDIN_UNREADY_DIR": str(flags)})
    conf = (sup.run_dir / "nginx.conf").read_text()
    (flags / "unready-1").touch()
    await wait_until(lambda: sup.replicas[1].state is ReplicaState.DOWN)
    assert read_status(sup.run_dir).replicas[1].state == "down"
    # its 503s are retried on replica 0 (and count as passive failures): nobody sees one
    result = await load(base_url(sup) + "/v1/embeddings", 40, concurrency=2, keepalive=True)
    assert result.failures == 0, result.statuses
    assert {u.rsplit(", ", 1)[-1] for u in result.upstreams} == {upstream_of(sup, 0)}
    (flags / "unready-1").unlink()
    await wait_until(lambda: sup.replicas[1].state is ReplicaState.UP)
    await asyncio.sleep(3.2)  # fail_timeout (2 s on nginx's whole-second clock) has passed
    result = await load(base_url(sup) + "/v1/embeddings", 40, concurrency=2, keepalive=True)
    assert set(result.upstreams) == {upstream_of(sup, 0), upstream_of(sup, 1)}
    assert [r.state for r in read_status(sup.run_dir).replicas] == ["up", "up"]
    assert sup.reloads == 0
    assert (sup.run_dir / "nginx.conf").read_text() == conf


async def test_stop_leaves_no_process_behind(start_cluster: ClusterFactory) -> None:
    sup = await start_cluster(replicas=2)
    pids = [r.pid for r in sup.replicas]
    assert sup.nginx is not None
    nginx_pid = sup.nginx.pid
    await sup.stop()
    for pid in [*pids, nginx_pid]:
        assert pid is not None
        assert not _alive(pid), pid
    assert [r.state for r in read_status(sup.run_dir).replicas] == ["stopped", "stopped"]
    assert not (sup.run_dir / "supervisor.pid").exists()
    assert (sup.run_dir / "nginx.conf").exists()  # nothing the user did not ask to remove


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes once reaped by its parent
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def foreign_process() -> Iterator[subprocess.Popen[bytes]]:
    """Some other live process, whose pid a stale-looking pid file can name."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


async def test_a_second_supervisor_refuses_a_busy_run_dir(
    start_cluster: ClusterFactory, tmp_path: Path, foreign_process: subprocess.Popen[bytes]
) -> None:
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    other = foreign_process.pid
    (run_dir / "supervisor.pid").write_text(f"{other}\n")
    with pytest.raises(ClusterError, match=f"a supervisor \\(pid {other}\\) is already"):
        await start_cluster(replicas=1, run_dir=run_dir)
    assert (run_dir / "supervisor.pid").read_text() == f"{other}\n"
    # a stale pid file (the process is gone) does not block a new supervisor
    foreign_process.kill()
    foreign_process.wait()
    sup = await start_cluster(replicas=1, run_dir=run_dir)
    assert (run_dir / "supervisor.pid").read_text() == f"{os.getpid()}\n"
    assert sup.replicas[0].state is ReplicaState.UP


async def test_a_scale_requested_during_a_rolling_restart_runs_after_it(
    start_cluster: ClusterFactory,
) -> None:
    supervisor = await start_cluster(replicas=2, max_replicas=3)
    supervisor.request_rolling_restart()
    supervisor.request_scale(3)  # arrives while the restart runs: queued, not dropped
    for _ in range(600):
        states = [r.state.value for r in supervisor.replicas]
        restarts = [r.restarts for r in supervisor.replicas]
        if states == ["up", "up", "up"] and restarts[:2] == [1, 1]:
            break
        await asyncio.sleep(0.1)
    assert [r.state.value for r in supervisor.replicas] == ["up", "up", "up"]
    assert [r.restarts for r in supervisor.replicas][:2] == [1, 1]
