"""Health-check thresholds, crash backoff, probes against a real stand-in, metrics parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import redline.lb
from redline.lb import HealthCheck, Replica, ReplicaState
from redline.lb._metrics import in_flight, requests_served
from redline.lb.health import ReplicaProbe, backoff_delay, record_check
from tests._services import free_port, wait_for_port
from tests.lb.conftest import standin_command


def idle_replica(tmp_path: Path) -> Replica:
    return Replica(0, free_port(), standin_command, log_dir=tmp_path)


def test_fall_and_rise_thresholds(tmp_path: Path) -> None:
    health = HealthCheck(fall=3, rise=2)
    replica = idle_replica(tmp_path)
    replica.state = ReplicaState.STARTING
    record_check(replica, True, health)
    assert replica.state is ReplicaState.STARTING  # one good check is not enough
    record_check(replica, True, health)
    assert replica.state is ReplicaState.UP
    for _ in range(2):
        record_check(replica, False, health)
    assert replica.state is ReplicaState.UP  # two failures < fall
    record_check(replica, True, health)  # a success resets the failure streak
    for _ in range(2):
        record_check(replica, False, health)
    assert replica.state is ReplicaState.UP
    record_check(replica, False, health)
    assert replica.state is ReplicaState.DOWN
    replica.crashes = 4
    record_check(replica, True, health)
    record_check(replica, True, health)
    assert replica.state is ReplicaState.UP
    assert replica.crashes == 0


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, base=0.5, cap=5.0) for n in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        5.0,
        5.0,
    ]
    with pytest.raises(ValueError, match="crashes must be >= 1, got 0"):
        backoff_delay(0, base=1, cap=2)


@pytest.fixture
async def running_standin(tmp_path: Path) -> AsyncIterator[Replica]:
    replica = idle_replica(tmp_path)
    replica.start()
    wait_for_port(replica.port, timeout=60)
    yield replica
    await replica.stop()
    assert not replica.alive
    assert replica.state is ReplicaState.STOPPED


async def test_probe_answers_for_a_live_replica_and_not_for_a_dead_one(
    running_standin: Replica, tmp_path: Path
) -> None:
    probe = ReplicaProbe(HealthCheck(timeout=2.0))
    try:
        assert await probe.ready(running_standin)
        text = await probe.metrics(running_standin)
        assert text is not None
        assert requests_served(text) == 0
        assert not await probe.ready(idle_replica(tmp_path))  # nothing listens there
        assert await probe.metrics(idle_replica(tmp_path)) is None
    finally:
        await probe.aclose()
    assert "pid=" in repr(running_standin)


def test_metrics_parsing_skips_probes_and_reads_in_flight() -> None:
    text = (
        "# HELP redline_http_requests_total HTTP requests.\n"
        'redline_http_requests_total{method="GET",route="/ready",status="200"} 9.0\n'
        'redline_http_requests_total{method="GET",route="/metrics",status="200"} 3.0\n'
        'redline_http_requests_total{method="POST",route="/v1/embeddings",status="200"} 7.0\n'
        'redline_http_requests_total{method="POST",route="/v1/predict",status="429"} 2.0\n'
        "redline_http_requests_in_flight 3.0\n"
    )
    assert requests_served(text) == 9
    assert in_flight(text) == 3
    assert requests_served("other_metric 1\n") is None
    assert in_flight("") is None


def test_public_names_are_exported() -> None:
    for name in redline.lb.__all__:
        assert getattr(redline.lb, name) is not None, name
    assert sorted(redline.lb.__all__) == sorted(set(redline.lb.__all__))
    assert "render_nginx_conf" in redline.lb.__all__
    assert "ClusterSupervisor" in redline.lb.__all__
