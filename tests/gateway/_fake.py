"""A real HTTP/1.1 server (raw asyncio, in a thread) that plays an OpenAI-compatible
embeddings upstream and can be told to fail: it counts every request and input it gets.

Behaviours (``script`` entries are used one per request, then ``mode``):
``ok`` (hashing-model vectors, ``usage`` = words), ``500``, ``429:N`` (``Retry-After: N``),
``400``, ``close`` (drop the connection without answering), ``hang`` (never answer),
``slow:S`` (answer after S seconds).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections import deque
from typing import Any

import orjson

from redline._ports import free_port
from redline.serve.testing import HashingModel


class FakeUpstream:
    def __init__(self, *, dimension: int = 16, model: str = "fake") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_name = model
        self.model = HashingModel(dimension)
        self.mode = "ok"
        self.script: deque[str] = deque()
        self.requests = 0
        self.embedding_calls: list[list[Any]] = []
        self.traceparents: list[str | None] = []  # per embedding call, as received
        self.paths: list[str] = []  # request targets (path and query), as received
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def inputs(self) -> list[Any]:
        with self._lock:
            return [text for call in self.embedding_calls for text in call]

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.embedding_calls = []
            self.traceparents = []
            self.script.clear()
            self.mode = "ok"

    def start(self) -> FakeUpstream:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._stop = asyncio.Event()
                self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
                started.set()
                await self._stop.wait()
                self._server.close()
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in handlers:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 2)
                await asyncio.sleep(0.05)  # let the streams' done callbacks run

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-upstream")
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and self._stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _method, path, _ = line.decode().split(" ", 2)
                length = 0
                traceparent = None
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                    elif name.strip().lower() == "traceparent":
                        traceparent = value.strip()
                body = await reader.readexactly(length) if length else b""
                with self._lock:
                    self.requests += 1
                    self.paths.append(path)
                    behaviour = self.script.popleft() if self.script else self.mode
                if path.partition("?")[0].endswith("/models"):
                    payload = {"data": [{"id": self.model_name, "object": "model"}]}
                    await self._send(writer, 200, payload)
                    continue
                request = orjson.loads(body)
                texts = request["input"]
                if isinstance(texts, str) or (texts and isinstance(texts[0], int)):
                    texts = [texts]
                with self._lock:
                    self.embedding_calls.append(list(texts))
                    self.traceparents.append(traceparent)
                if behaviour == "close":
                    writer.close()
                    return
                if behaviour == "hang":
                    await asyncio.sleep(3600)
                if behaviour.startswith("slow:"):
                    await asyncio.sleep(float(behaviour.split(":")[1]))
                    behaviour = "ok"
                if behaviour == "500":
                    await self._send(writer, 500, {"error": {"message": "boom"}})
                elif behaviour.startswith("429"):
                    after = behaviour.partition(":")[2] or "1"
                    error = {"error": {"message": "slow down"}}
                    await self._send(writer, 429, error, {"Retry-After": after})
                elif behaviour == "400":
                    await self._send(writer, 400, {"error": {"message": "bad dimensions"}})
                else:
                    await self._send(writer, 200, self._embed(request, texts))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _embed(self, request: dict[str, Any], texts: list[Any]) -> dict[str, Any]:
        # token-id inputs are embedded as the text of their list; they cost one token per id
        vectors = self.model.batch(
            [t if isinstance(t, str) else orjson.dumps(t).decode() for t in texts]
        )
        dims = request.get("dimensions")
        if dims:
            vectors = vectors[:, :dims]
            vectors = vectors / (vectors**2).sum(axis=1, keepdims=True) ** 0.5
        data = []
        for index, vector in enumerate(vectors.astype("<f4")):
            if request.get("encoding_format") == "base64":
                embedding: Any = base64.b64encode(vector.tobytes()).decode()
            else:
                embedding = vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(max(1, len(t.split())) if isinstance(t, str) else len(t) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = orjson.dumps(payload)
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
