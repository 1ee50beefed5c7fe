"""`redline nginx-config` and `redline cluster` (run, status, restart) as a user runs them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from redline.cli import build_app
from redline.lb import NGINX_MISSING_HINT, check_nginx_conf
from tests._services import free_port
from tests.lb.conftest import subprocess_env

HASHING = "redline.serve.testing:create_hashing_model"


def redline(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        check=False,
    )


def test_nginx_config_output_passes_nginx_t(nginx_binary: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(),
        [
            "nginx-config",
            "--replicas",
            "3",
            "--base-port",
            "9101",
            "--weight",
            "2",
            "--weight",
            "1",
            "--weight",
            "1",
            "--strategy",
            "least_conn",
            "--backup",
            "127.0.0.1:9200",
            "--rate",
            "50r/s",
            "--burst",
            "10",
            "--nodelay",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "server 127.0.0.1:9101 weight=2" in result.output
    assert "least_conn;" in result.output
    (tmp_path / "nginx.conf").write_text(result.output)
    check_nginx_conf(nginx_binary, tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--replicas", "2", "--strategy", "ip_hash", "--backup", "127.0.0.1:9"],
            "strategy 'ip_hash' cannot have backup servers",
        ),
        (["--replicas", "2", "--weight", "1"], "got 1 --weight values for 2 servers"),
        (["--replicas", "1", "--burst", "5"], "burst and nodelay need a rate"),
        (["--server", "localhost"], "server must be 'host:port', got 'localhost'"),
        ([], "at least one upstream server is required"),
        (["--replicas", "1", "--strategy", "sticky"], "unknown strategy 'sticky'"),
    ],
)
def test_nginx_config_bad_flags_exit_2_with_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(build_app(), ["nginx-config", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cluster_without_nginx_prints_hint_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["cluster", "--nginx", str(tmp_path / "no-nginx"), "--run-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert NGINX_MISSING_HINT in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not list(tmp_path.glob("logs/replica-*.log"))  # nothing was started


def test_cluster_status_and_restart_without_cluster_fail_cleanly(tmp_path: Path) -> None:
    for command in ("status", "restart"):
        result = CliRunner().invoke(build_app(), ["cluster", command, "--run-dir", str(tmp_path)])
        assert result.exit_code == 1
        assert "is `redline cluster` running?" in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cluster_bad_flags_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["cluster", "--replicas", "2", "--weight", "1", "--run-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "got 1 weights for 2 replicas" in result.stderr


@pytest.fixture
def cluster_process(
    nginx_binary: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    run_dir, port = tmp_path / "run", free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redline",
            "cluster",
            "--replicas",
            "2",
            "--max-replicas",
            "3",
            "--listen",
            f"127.0.0.1:{port}",
            "--model",
            HASHING,
            "--cache-url",
            "none",
            "--run-dir",
            str(run_dir),
            "--check-interval",
            "0.25",
            "--rise",
            "1",
            "--drain",
            "0.3",
            "--nginx",
            nginx_binary,
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc, run_dir, port
    if proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
    proc.wait(30)


def _status(run_dir: Path) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = json.loads((run_dir / "status.json").read_text())
        return status
    except (FileNotFoundError, ValueError):
        return None


def _wait(predicate: object, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


def test_cluster_run_status_restart_and_clean_shutdown(
    cluster_process: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, run_dir, port = cluster_process

    def states() -> list[str]:
        status = _status(run_dir) or {"replicas": []}
        return [r["state"] for r in status["replicas"]]

    _wait(lambda: states() == ["up", "up"] or proc.poll() is not None)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "hi"})
    assert response.status_code == 200
    assert response.headers["x-upstream"].startswith("127.0.0.1:")

    shown = redline("cluster", "status", "--run-dir", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert f"redline cluster on 127.0.0.1:{port}" in shown.stdout
    assert shown.stdout.count(" up ") >= 2

    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert len(descendants) >= 4  # 2 replicas, nginx master, >= 1 nginx worker

    restart = redline("cluster", "restart", "--run-dir", str(run_dir))
    assert restart.returncode == 0, restart.stderr
    _wait(
        lambda: (
            [r["restarts"] for r in (_status(run_dir) or {"replicas": []})["replicas"]] == [1, 1]
            and states() == ["up", "up"]
        )
    )
    descendants += psutil.Process(proc.pid).children(recursive=True)

    conf = (run_dir / "nginx.conf").read_text()
    scale = redline("cluster", "scale", "3", "--run-dir", str(run_dir))
    assert scale.returncode == 0, scale.stderr
    _wait(lambda: states() == ["up", "up", "up"])
    descendants += psutil.Process(proc.pid).children(recursive=True)
    assert redline("cluster", "scale", "2", "--run-dir", str(run_dir)).returncode == 0
    _wait(lambda: states() == ["up", "up"])
    assert (run_dir / "nginx.conf").read_text() == conf  # the third slot was there all along
    bad = redline("cluster", "scale", "0", "--run-dir", str(run_dir))
    assert bad.returncode == 2
    assert "replicas must be >= 1, got 0" in bad.stderr

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    survivors = [
        p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert survivors == []
    assert states() == ["stopped", "stopped"]
    assert (run_dir / "nginx.conf").exists()
    assert not (run_dir / "supervisor.pid").exists()
