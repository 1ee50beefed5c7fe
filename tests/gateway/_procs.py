"""``redline serve`` subprocesses for the gateway tests: a gateway, an upstream (``Serve`` itself
lives in ``redline._services.serve``, shared with the gateway benchmark)."""

from __future__ import annotations

from redline._services.serve import HASHING, Serve

__all__ = ["HASHING", "Serve", "gateway", "upstream_server"]


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
