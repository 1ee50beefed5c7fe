"""`redline serve` as a real process on a free loopback port, for the abuse and OpenAPI tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import redline
from tests._services import free_port, stop_process, wait_for_port

# The server runs the same source as the tests (an old checkout's, when checking a fix).
SOURCE = Path(redline.__file__).resolve().parents[1]
HASHING_MODEL = "redline.serve.testing:create_hashing_model"


@contextmanager
def serve_process(tmp_path: Path, *flags: str, **env: str) -> Iterator[str]:
    """Run ``redline serve`` with the HashingModel and *flags*; yield its URL once ready."""
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(SOURCE),
        "REDLINE_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    command = [sys.executable, "-m", "redline", "serve", "--port", str(port)]
    command += ["--model", HASHING_MODEL, "--log-level", "warning", *flags]
    log = (tmp_path / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=log, stderr=log)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/ready", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError("redline serve never became ready")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(proc)
        log.close()
