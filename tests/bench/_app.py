"""A small real ASGI server for the load-generator tests (run by uvicorn in a subprocess).

Routes: ``POST /v1/embeddings`` and ``/v1/predict`` (400 for a model other than MODEL_ID;
X-Cache hit for an input seen before; Server-Timing with fixed stage durations),
``/v1/flaky`` (every 3rd request 500, every 5th
429), ``/v1/stall`` (the STALL_AT-th request holds a global lock for STALL_S seconds, so every
request behind it waits), ``/v1/slow`` (sleeps 50 ms), ``/v1/hang`` (sleeps 8 s),
``GET /trivial``, ``GET /metrics``, ``POST /reset``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

MODEL_ID = "fake-model"
STALL_AT = 20
STALL_S = 1.0
SERVER_TIMING = b"cache;dur=0.5, queue;dur=1.5, inference;dur=3.0, total;dur=5.5"

_state: dict[str, Any] = {"seen": set(), "count": 0, "stall_count": 0, "flaky": 0, "hang": 0}
_lock = asyncio.Lock()


def _metrics() -> bytes:
    count = _state["count"]
    return (
        "# TYPE redline_http_requests_total counter\n"
        f'redline_http_requests_total{{route="/v1/embeddings",status="200"}} {count}\n'
        "# TYPE redline_inference_duration_seconds histogram\n"
        f'redline_inference_duration_seconds_bucket{{le="+Inf"}} {count}\n'
        f"redline_inference_duration_seconds_sum {count * 0.003}\n"
        f"redline_inference_duration_seconds_count {count}\n"
        f"redline_batch_queue_wait_seconds_sum {count * 0.0015}\n"
        f"redline_batch_queue_wait_seconds_count {count}\n"
        f"test_hanging_requests_total {_state['hang']}\n"
    ).encode()


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
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
    path = scope["path"]
    body = await _read_body(receive)
    if path == "/trivial":
        await _respond(send, 200, b"ok", [])
    elif path == "/metrics":
        await _respond(send, 200, _metrics(), [])
    elif path == "/reset":
        _state.update(seen=set(), count=0, stall_count=0, flaky=0, hang=0)
        await _respond(send, 200, b"{}", [])
    elif path in ("/v1/embeddings", "/v1/predict"):
        payload = json.loads(body)
        if payload.get("model", MODEL_ID) != MODEL_ID:
            await _respond(send, 400, b'{"error": "model not served here"}', [])
            return
        text = payload.get("input", payload.get("text"))
        key = json.dumps(text)
        hit = key in _state["seen"]
        _state["seen"].add(key)
        _state["count"] += 1
        headers = [(b"x-cache", b"hit" if hit else b"miss"), (b"server-timing", SERVER_TIMING)]
        await _respond(send, 200, b'{"data": [{"embedding": [0.0]}]}', headers)
    elif path == "/v1/flaky":
        _state["flaky"] += 1
        n = _state["flaky"]
        status = 500 if n % 3 == 0 else 429 if n % 5 == 0 else 200
        await _respond(send, status, b"{}", [])
    elif path == "/v1/stall":
        async with _lock:
            _state["stall_count"] += 1
            if _state["stall_count"] == STALL_AT:
                await asyncio.sleep(STALL_S)
        await _respond(send, 200, b"{}", [])
    elif path == "/v1/hang":
        _state["hang"] += 1
        await asyncio.sleep(8)
        await _respond(send, 200, b"{}", [])
    elif path == "/v1/slow":
        await asyncio.sleep(0.05)
        await _respond(send, 200, b"{}", [])
    else:
        await _respond(send, 404, b'{"error": "not found"}', [])
