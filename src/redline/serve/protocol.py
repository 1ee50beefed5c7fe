"""One send per response: uvicorn's HTTP protocol with writes coalesced per event-loop turn.

uvicorn writes a response's status line and headers, then its body, as two separate sends.
A replica killed (or preempted, then killed) between the two leaves nginx holding a header
it has already passed on to the client and a body that never comes: nginx can only retry an
upstream (``proxy_next_upstream``) while nothing has been sent to the client, so the client
sees a truncated response. Joining the writes made in one loop turn into one send closes that
window for every response that fits in one write, and saves a syscall per response.

>>> uvicorn.run(app, http=coalescing_http_protocol())
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport", "coalescing_http_protocol"]


class CoalescingTransport:
    """Wraps a transport: writes made in one loop turn reach the socket as one write."""

    __slots__ = ("_buffer", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._buffer.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what was buffered now (one write)."""
        self._scheduled = False
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._buffer))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._buffer.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def __repr__(self) -> str:
        return f"<CoalescingTransport buffered={len(self._buffer)} of {self._transport!r}>"


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)  # type: ignore[arg-type]


def coalescing_http_protocol() -> type[asyncio.Protocol]:
    """The protocol class to hand to ``uvicorn.run(http=...)`` (importable, so workers get it)."""
    return CoalescingHttpToolsProtocol
