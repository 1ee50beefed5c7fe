"""A minimal stand-in replica for supervisor tests: ``python tests/lb/standin_app.py PORT INDEX``.

/ready and /v1/embeddings answer 503 while the file named by
``$STANDIN_UNREADY_DIR/unready-<index>`` exists, so a test can fail a replica's health checks
(and its requests) without killing it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def build(index: int) -> Starlette:
    served = 0
    unready_dir = os.environ.get("STANDIN_UNREADY_DIR")

    def unready() -> bool:
        return unready_dir is not None and (Path(unready_dir) / f"unready-{index}").exists()

    async def ready(request: Request) -> Response:
        if unready():
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def embeddings(request: Request) -> Response:
        nonlocal served
        if unready():
            return JSONResponse({"error": "overloaded"}, status_code=503)
        served += 1
        body = await request.json()
        return JSONResponse(
            {"replica": index, "input": body.get("input")}, headers={"X-Replica": str(index)}
        )

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(
            f"# TYPE redline_http_requests_total counter\nredline_http_requests_total {served}\n"
        )

    return Starlette(
        routes=[
            Route("/ready", ready),
            Route("/health", health),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/metrics", metrics),
        ]
    )


if __name__ == "__main__":
    port, index = int(sys.argv[1]), int(sys.argv[2])
    uvicorn.run(build(index), host="127.0.0.1", port=port, log_level="warning")
