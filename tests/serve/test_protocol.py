"""One send per response: writes made in one loop turn leave as one write on a real socket."""

from __future__ import annotations

import asyncio
import socket

import httpx

from redline.serve.protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from tests._services import free_port


async def _transport_pair() -> tuple[asyncio.Transport, socket.socket, list[bytes]]:
    """A real socket transport whose writes are recorded, and the peer socket."""
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
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
    wrapped.write(b"hello")
    assert sent == []  # nothing leaves before the turn ends
    await asyncio.sleep(0)
    assert sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    peer.settimeout(5)
    assert peer.recv(1024).endswith(b"hello")
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
        http=CoalescingHttpToolsProtocol,
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
