"""Slow clients are cut: a request's headers and body each have a deadline (real process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.serve._process import serve_process

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
# Generous: the box is shared. The old server held these connections past any margin.
MARGIN = 4.0
HELD_FOR = HEADER_TIMEOUT + MARGIN + 6.0  # how long a slow client keeps trying


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    timeouts = {
        "REDLINE_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "REDLINE_BODY_TIMEOUT": str(BODY_TIMEOUT),
    }
    with serve_process(tmp_path_factory.mktemp("slow-clients"), **timeouts) as url:
        yield int(url.rsplit(":", 1)[1])


async def _drip(port: int, first: bytes, drip: bytes, every: float) -> tuple[float, bytes]:
    """Send *first*, then *drip* every *every* seconds until the server closes (or HELD_FOR
    passes); return how long the connection lived and what the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    received = b""
    try:
        if first:
            writer.write(first)
            await writer.drain()
        while time.monotonic() - started < HELD_FOR:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), every)
            except TimeoutError:
                try:
                    writer.write(drip)
                    await writer.drain()
                except ConnectionError:
                    break
                continue
            if not chunk:  # closed by the server
                break
            received += chunk
        return time.monotonic() - started, received
    finally:
        writer.close()


def _status_and_error(received: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower()
    return status, orjson.loads(body)["error"]


async def test_slowloris_connections_are_cut_at_the_header_timeout(port: int) -> None:
    # Five clients, each sending one more header line every 2 s and never finishing.
    first = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    lines = [f"X-Slow-{n}: still here\r\n".encode() for n in range(5)]
    results = await asyncio.gather(*(_drip(port, first, line, 2.0) for line in lines))
    for held, received in results:
        assert held < HEADER_TIMEOUT + MARGIN, f"slowloris connection held {held:.1f}s"
        status, error = _status_and_error(received)
        assert status == 408
        assert error["code"] == "request_timeout"
        assert "headers" in str(error["message"])


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port: int) -> None:
    held, received = await _drip(port, b"", b"", HELD_FOR)
    assert held < HEADER_TIMEOUT + MARGIN
    assert received == b""


async def test_a_body_that_trickles_in_is_cut_at_the_body_timeout(port: int) -> None:
    head = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    held, received = await _drip(port, head + b'{"input": "', b"a", 1.0)
    assert held < BODY_TIMEOUT + MARGIN, f"slow body held {held:.1f}s"
    status, error = _status_and_error(received)
    assert status == 408
    assert "body" in str(error["message"])
    # The endpoint waiting on the body saw a disconnect: counted as 499, not a 500.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        metrics = (await client.get("/metrics")).text
    assert 'route="/v1/embeddings",status="499"' in metrics
    assert 'status="500"' not in metrics


async def test_clients_within_the_deadlines_are_served(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Headers in two pieces, 1 s apart; then a second request on the same connection.
        body = b'{"input": "hello"}'
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        await asyncio.sleep(1.0)
        writer.write(
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(1.0)
        writer.write(body)
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 200")
        length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        # Idle past the header timeout but under uvicorn's 5 s keep-alive timeout: the
        # connection stays open for the next request.
        await asyncio.sleep(HEADER_TIMEOUT + 0.8)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert second.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_a_request_the_parser_refuses_gets_a_json_400(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")  # no colon
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status, error = _status_and_error(received)
    assert status == 400
    assert error["code"] == "invalid_http"


def test_the_protocol_factory_pickles_for_worker_processes() -> None:
    import pickle

    from redline.serve.protocol import guarded_http_protocol

    factory = pickle.loads(pickle.dumps(guarded_http_protocol(1.5, 2.5)))
    assert factory.keywords == {"header_timeout": 1.5, "body_timeout": 2.5}
    with pytest.raises(ValueError, match="must be > 0 seconds, got 0 and 2"):
        guarded_http_protocol(0, 2)
