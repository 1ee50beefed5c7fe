"""`redline serve` as a real process on a free loopback port, for the abuse and OpenAPI tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redline
from redline._services.serve import HASHING, Serve

# The server runs the same source as the tests (an old checkout's, when checking a fix).
SOURCE = Path(redline.__file__).resolve().parents[1]


@contextmanager
def serve_process(tmp_path: Path, *flags: str, **env: str) -> Iterator[str]:
    """Run ``redline serve`` with the HashingModel and *flags* in *tmp_path* (its working
    directory, data dir ``data`` and log ``serve-PORT.log``); yield its URL once ready."""
    server = Serve(
        "--model",
        HASHING,
        "--log-level",
        "warning",
        *flags,
        env={"PYTHONPATH": str(SOURCE), **env},
        home=tmp_path,
    )
    with server:
        yield server.url
