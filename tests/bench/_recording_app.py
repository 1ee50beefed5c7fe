"""A tiny real ASGI app that records what wrk sends (run by uvicorn in a subprocess).

``POST /v1/embeddings`` keeps the body's ``input`` and ``model`` and answers 200 (503 when the
model is ``unavailable``); ``GET /received`` returns every kept pair; ``POST /reset`` clears.
"""

from __future__ import annotations

import json
from typing import Any

_received: list[list[str]] = []


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = await _read_body(receive)
    if scope["path"] == "/v1/embeddings":
        payload = json.loads(body)
        _received.append([payload["input"], payload["model"]])
        status = 503 if payload["model"] == "unavailable" else 200
        await _respond(send, status, b'{"data": [{"index": 0, "embedding": [0.0]}]}')
    elif scope["path"] == "/received":
        await _respond(send, 200, json.dumps(_received).encode())
    elif scope["path"] == "/reset":
        _received.clear()
        await _respond(send, 200, b"{}")
    else:
        await _respond(send, 404, b'{"error": "not found"}')
