"""``redline serve`` subprocesses for the gateway tests: a gateway, an upstream (``Serve`` itself
lives in ``redline._services.serve``, shared with the gateway benchmark)."""

from __future__ import annotations

import os

from redline._services.serve import HASHING, Serve
from redline.serve.testing import HashingModel

__all__ = ["HASHING", "Serve", "create_second_hashing_model", "gateway", "upstream_server"]


def gateway(
    *upstreams: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Serve:
    """A gateway: a local hashing model named ``local`` plus *upstreams* (``NAME=URL...``)."""
    args = ["--model", HASHING]
    for spec in upstreams:
        args += ["--upstream", spec]
    return Serve(*args, *extra, env={"REDLINE_HASHING_NAME": "local", **(env or {})})


def upstream_server(env: dict[str, str] | None = None, port: int | None = None) -> Serve:
    """An upstream: ``redline serve`` with the hashing model (named ``hashing``)."""
    return Serve("--model", HASHING, "--cache-url", "none", env=env, port=port)


def create_second_hashing_model() -> HashingModel:
    """A second hashing model for ``--model`` (named by ``REDLINE_SECOND_NAME``, ``second``)."""
    return HashingModel(384, name=os.environ.get("REDLINE_SECOND_NAME") or "second")
