"""uvicorn's HTTP protocol with writes coalesced per event-loop turn, and deadlines for slow
clients.

uvicorn writes a response's status line and headers, then its body, as two separate sends.
A replica killed (or preempted, then killed) between the two leaves nginx holding a header
it has already passed on to the client and a body that never comes: nginx can only retry an
upstream (``proxy_next_upstream``) while nothing has been sent to the client, so the client
sees a truncated response. Joining the writes made in one loop turn into one send closes that
window for every response that fits in one write, and saves a syscall per response.

uvicorn has a keep-alive timeout but no deadline on reading a request: a client that sends
a header line every few seconds (slowloris), or a body a byte at a time, holds its connection
for as long as it likes. Here a request's line and headers must arrive within
``header_timeout`` seconds (counted from the connection's start, or from the first byte of a
later request on a kept-alive connection), and its body within ``body_timeout`` seconds of
its headers; past either the client gets a JSON ``408`` (when no response has started) and
the connection is closed. A pipelined request's body is not timed: reading it waits on the
response before it.

>>> uvicorn.run(app, http=coalescing_http_protocol(header_timeout=10, body_timeout=30))
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from redline.serve.errors import error_body

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "CoalescingHttpToolsProtocol",
    "CoalescingTransport",
    "coalescing_http_protocol",
]

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0


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

    def is_closing(self) -> bool:  # asked several times per request: not via __getattr__
        return self._transport.is_closing()

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


class _Awaiting(enum.Enum):
    """What the connection is reading now, so which deadline applies."""

    HEAD = "request line and headers"
    BODY = "request body"
    NOTHING = "nothing timed"


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`, with
    deadlines on reading a request's headers and body."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if header_timeout <= 0 or body_timeout <= 0:
            raise ValueError(
                f"header_timeout and body_timeout must be > 0 seconds, "
                f"got {header_timeout} and {body_timeout}"
            )
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._awaiting = _Awaiting.HEAD
        self._head_begun = False  # some bytes of the next request have arrived
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)  # type: ignore[arg-type]
        self._arm(self.header_timeout)  # a client that connects and sends nothing is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting is _Awaiting.HEAD:
            self._head_begun = True
        super().data_received(data)
        # Arm here rather than in the parser callbacks: a request that arrives whole in one
        # read never needs a timer. Between requests nothing is timed here: an idle kept-alive
        # connection is uvicorn's keep-alive timeout's to close.
        if self._deadline is None and not self.transport.is_closing():
            if self._awaiting is _Awaiting.HEAD and self._head_begun:
                self._arm(self.header_timeout)
            elif self._awaiting is _Awaiting.BODY:
                self._arm(self.body_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._disarm()
        # A pipelined request waits (reading paused) for the response before it: not timed.
        self._awaiting = _Awaiting.NOTHING if self.pipeline else _Awaiting.BODY

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._awaiting = _Awaiting.HEAD
        self._head_begun = False

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._awaiting = _Awaiting.NOTHING
        super().handle_websocket_upgrade()

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        """The client took too long over a request's headers or body: 408, then close."""
        self._deadline = None
        if self.transport.is_closing() or self._awaiting is _Awaiting.NOTHING:
            return
        cycle = self.cycle
        if self._awaiting is _Awaiting.HEAD:
            if cycle is not None and not cycle.response_complete:
                # The next request's head trickles in while a response is in flight:
                # finish that response, then close.
                cycle.keep_alive = False
                return
            if self._head_begun:  # a connection that never sent a byte is just closed
                message = f"request line and headers not received within {self.header_timeout:g}s"
                self._send_error(408, message, "request_timeout")
            self.transport.close()
            return
        if cycle is not None:
            if not cycle.response_started:
                message = f"request body not received within {self.body_timeout:g}s"
                self._send_error(408, message, "request_timeout")
            # The app reading the body sees a disconnect; whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses gets the API's JSON error shape too, then close."""
        self._send_error(400, f"{msg} The request is not valid HTTP/1.1.", "invalid_http")
        self.transport.close()

    def _send_error(self, status: int, message: str, code: str) -> None:
        """Write a JSON error with ``connection: close`` straight to the transport."""
        body = error_body(status, message, code=code)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))


def coalescing_http_protocol(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT, body_timeout: float = DEFAULT_BODY_TIMEOUT
) -> Callable[..., asyncio.Protocol]:
    """The protocol factory to hand to ``uvicorn.run(http=...)``: uvicorn calls it as it would
    a protocol class, and it pickles (a partial of an importable class), so workers get it."""
    if header_timeout <= 0 or body_timeout <= 0:
        raise ValueError(
            f"header_timeout and body_timeout must be > 0 seconds, "
            f"got {header_timeout} and {body_timeout}"
        )
    return partial(
        CoalescingHttpToolsProtocol, header_timeout=header_timeout, body_timeout=body_timeout
    )
