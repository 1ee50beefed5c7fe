"""One send per response: writes made in one loop turn leave as one write on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sized
from functools import partial
from typing import Any

import httpx

from redline.serve.protocol import CoalescingTransport, guarded_http_protocol
from tests._services import free_port


async def _transport_pair(
    protocol: Callable[[], asyncio.BaseProtocol] = asyncio.Protocol,
) -> tuple[asyncio.Transport, socket.socket, list[bytes]]:
    """A real socket transport (for *protocol*) whose writes are recorded, and the peer socket."""
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(protocol, ours)
    sent: list[bytes] = []
    real_write = transport.write

    def recording_write(data: bytes | bytearray | memoryview) -> None:
        sent.append(bytes(data))
        real_write(data)

    transport.write = recording_write  # type: ignore[method-assign]
    return transport, peer, sent


async def test_writes_in_one_loop_turn_reach_the_socket_as_one_write() -> None:
    transport, peer, sent = await _transport_pair()
    wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
    wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert sent == []  # a head alone waits for its body, or for the turn's end
    wrapped.write(b"hello")
    # The head and its body leave together at once, not after the rest of the turn.
    assert sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    await asyncio.sleep(0)
    assert len(sent) == 1
    peer.settimeout(5)
    assert peer.recv(1024).endswith(b"hello")
    wrapped.close()
    peer.close()


async def test_a_write_alone_in_its_turn_leaves_when_the_turn_ends() -> None:
    transport, peer, sent = await _transport_pair()
    wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
    wrapped.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer holds nothing back
    wrapped.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert sent == []
    await asyncio.sleep(0)
    assert sent == [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    ]
    wrapped.write(b"5\r\nhello\r\n")  # a chunk of a later turn
    await asyncio.sleep(0)
    assert sent[1:] == [b"5\r\nhello\r\n"]
    assert wrapped.writes == 2
    wrapped.close()
    peer.close()


async def test_close_flushes_what_is_buffered() -> None:
    transport, peer, sent = await _transport_pair()
    wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
    wrapped.write(b"bye")
    wrapped.close()
    assert sent == [b"bye"]
    assert wrapped.get_write_buffer_size() == 0
    peer.close()


async def test_abort_drops_the_buffer() -> None:
    transport, peer, sent = await _transport_pair()
    wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
    wrapped.write(b"never")
    wrapped.abort()
    await asyncio.sleep(0)
    assert sent == []
    peer.close()


async def test_uvicorn_serves_keepalive_requests_through_the_protocol() -> None:
    import uvicorn

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        assert scope["type"] == "http"
        body = scope["path"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,  # type: ignore[operator]
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})  # type: ignore[operator]

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=guarded_http_protocol(),  # type: ignore[arg-type]
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            bodies = [(await client.get(f"/r{i}")).text for i in range(20)]
        assert bodies == [f"/r{i}" for i in range(20)]
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def _guarded_pair(
    app: object, header_timeout: float = 10.0, body_timeout: float = 30.0
) -> AsyncIterator[tuple[asyncio.Transport, socket.socket, list[bytes]]]:
    """uvicorn's protocol inside the guard on a real socket, built as uvicorn builds it; the
    socket's writes are recorded; both ends closed on the way out."""
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, lifespan="off", log_level="warning")  # type: ignore[arg-type]
    config.load()
    factory = guarded_http_protocol(header_timeout=header_timeout, body_timeout=body_timeout)
    guard = factory(config=config, server_state=ServerState(), app_state={})
    transport, peer, sent = await _transport_pair(lambda: guard)
    peer.setblocking(False)
    try:
        yield transport, peer, sent
    finally:
        transport.close()
        peer.close()


async def _send_in_two(send: Any, body: bytes) -> None:
    """Send a 200 answer of *body*: its start and its body as two messages."""
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _two_sends(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """An app that sends its response's start and body as two messages."""
    await _send_in_two(send, b'{"ok": true}')


def _grew(items: Sized, count: int) -> bool:
    return len(items) > count


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_uvicorns_protocol_inside_the_guard_sends_a_response_in_one_write() -> None:
    async with _guarded_pair(_two_sends) as (_transport, peer, sent):
        loop = asyncio.get_running_loop()
        for _ in range(3):  # kept alive: each response is one write
            count = len(sent)
            await loop.sock_sendall(peer, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            await _until(partial(_grew, sent, count))
            await asyncio.sleep(0.05)  # a second write would have come by now
            assert len(sent) == count + 1
            assert sent[-1].startswith(b"HTTP/1.1 200 OK\r\n")
            assert sent[-1].endswith(b'\r\n\r\n{"ok": true}')


async def test_a_later_request_on_a_kept_alive_connection_has_a_header_deadline() -> None:
    async with _guarded_pair(_two_sends, header_timeout=0.5) as (transport, peer, sent):
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await _until(lambda: len(sent) == 1)
        await asyncio.sleep(0.8)  # idle past the header deadline: not timed between requests
        assert not transport.is_closing()
        await loop.sock_sendall(peer, b"GET /y HTTP/1.1\r\nHost: a\r\n")  # never finished
        await _until(transport.is_closing, 3.0)
        assert sent[-1].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"connection: close\r\n" in sent[-1]
        assert b'"code":"request_timeout"' in sent[-1]


async def test_bytes_that_are_not_http_never_reach_uvicorn_and_get_a_json_400() -> None:
    called: list[object] = []

    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        called.append(scope)

    async with _guarded_pair(app) as (transport, peer, sent):
        await asyncio.get_running_loop().sock_sendall(peer, b"\x16\x03\x01 not http\r\n\r\n")
        await _until(transport.is_closing)
        assert len(sent) == 1
        assert sent[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b'"code":"invalid_http"' in sent[0]
        assert called == []


def test_redline_builds_on_no_private_uvicorn_module_or_class() -> None:
    """The HTTP protocol was once a subclass of uvicorn's ``HttpToolsProtocol``, imported from
    ``uvicorn.protocols``: every uvicorn upgrade could break it. Nothing may come back to that:
    no import of ``uvicorn.protocols`` or of an underscored uvicorn name, and the protocol
    uvicorn is handed is no uvicorn class."""
    import ast
    from pathlib import Path

    import redline
    from redline.serve.protocol import GuardedHttpProtocol

    offences = []
    for path in sorted(Path(redline.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
                names: list[str] = []
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                modules = [node.module]
                names = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] != "uvicorn":
                    continue
                private = module.startswith("uvicorn.protocols") or any(
                    part.startswith("_") for part in [*parts, *names]
                )
                if private:
                    offences.append(f"{path.name}:{node.lineno} {module} {names}")
    assert offences == []
    assert [c for c in GuardedHttpProtocol.__mro__ if c.__module__.startswith("uvicorn")] == []


async def _slow_echo(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """Answers the request's path after 0.3 s."""
    await asyncio.sleep(0.3)
    await _send_in_two(send, scope["path"].encode())


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with _guarded_pair(_slow_echo, header_timeout=0.5) as (transport, peer, sent):
        two = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
        await asyncio.get_running_loop().sock_sendall(peer, two)
        await _until(partial(_grew, sent, 1))
        assert [answer.rsplit(b"\r\n\r\n", 1)[1] for answer in sent] == [b"/one", b"/two"]
        assert not transport.is_closing()


async def test_a_late_pipelined_head_gets_no_408_before_the_answer_before_it() -> None:
    # A 408 written before the first answer would be read as that answer: the first answer
    # goes out, then the connection is closed.
    async with _guarded_pair(_slow_echo, header_timeout=0.1) as (transport, peer, sent):
        first_and_a_half = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\n"
        await asyncio.get_running_loop().sock_sendall(peer, first_and_a_half)
        await _until(transport.is_closing, 3.0)
        assert len(sent) == 1
        assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert sent[0].endswith(b"\r\n\r\n/one")


async def test_a_body_late_after_100_continue_still_gets_the_body_408() -> None:
    # uvicorn answers "100 Continue" when the app first reads the body: an interim answer,
    # not the response, so the late body is still answered with the JSON 408.
    seen: list[object] = []

    async def reader(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        seen.append(await receive())  # type: ignore[operator]
        seen.append(await receive())  # type: ignore[operator]

    async with _guarded_pair(reader, body_timeout=0.3) as (transport, peer, sent):
        head = (
            b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
        )
        await asyncio.get_running_loop().sock_sendall(peer, head)
        await _until(partial(_grew, sent, 0))
        assert sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        await asyncio.get_running_loop().sock_sendall(peer, b'{"in')
        await _until(transport.is_closing, 3.0)
        assert sent[-1].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"request body not received within 0.3s" in sent[-1]
        await _until(partial(_grew, seen, 1))
        assert seen[-1] == {"type": "http.disconnect"}
