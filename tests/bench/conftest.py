"""Fixtures of the bench tests: a real uvicorn server running ``tests/bench/_app.py``."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def app_server() -> Iterator[str]:
    """Base URL of the test ASGI app served by a real uvicorn subprocess."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.bench._app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
    )
    try:
        wait_for_port(port, timeout=30.0, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def app_url(app_server: str) -> str:
    """The test app, with its counters reset."""
    request = urllib.request.Request(f"{app_server}/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    return app_server


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"
