"""uvicorn's HTTP protocol behind a guard of ours: writes coalesced per event-loop turn,
deadlines for slow clients, and the API's JSON shape for a request that is not HTTP.

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
response before it. A pipelined request whose headers are late while the response before it
has not begun gets no 408 (the client would read it as that answer): the connection is closed
once that response has been written.

All of it is built from public interfaces: :class:`GuardedHttpProtocol` is a plain
:class:`asyncio.Protocol` that uvicorn is given through its ``http`` option. It owns the
protocol uvicorn would use for ``http="httptools"`` (created the way uvicorn creates it, by
name), hands it a :class:`CoalescingTransport`, and forwards every event to it. It finds where
requests begin and end with a parser of its own (``httptools``, the library uvicorn's parser
is, with the same leniency, and no per-header callback): the bytes it refuses get a JSON
``400`` before uvicorn sees them.

>>> uvicorn.run(app, http=guarded_http_protocol(header_timeout=10, body_timeout=30))
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from functools import cache, partial
from http import HTTPStatus
from typing import Any, cast

import httptools
from uvicorn import Config
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.server import ServerState

from redline.serve.errors import error_body

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "CoalescingTransport",
    "GuardedHttpProtocol",
    "guarded_http_protocol",
]

logger = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
#: The protocol inside the guard, by the name uvicorn's ``http`` option gives it.
INNER_HTTP = "httptools"


class CoalescingTransport:
    """Wraps a transport: writes made in one loop turn reach the socket as one write.

    A write waits in a buffer until the turn ends, or until the next write that carries a
    response: a response's head and its body (uvicorn's two writes) leave together at once,
    before the rest of the turn (the request's metrics, log line and usage hand-over) runs.

    ``writes`` counts the writes that carry a response (a ``1xx`` interim answer such as
    ``100 Continue`` answers nothing yet and is not counted)."""

    __slots__ = (
        "_buffer",
        "_close_after_write",
        "_holding",
        "_loop",
        "_scheduled",
        "_transport",
        "writes",
    )

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False
        self._holding = False  # the buffer holds a write that carries a response
        self._close_after_write = False
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        data = bytes(data)
        carries = not data.startswith(b"HTTP/1.1 1")
        self._buffer.append(data)
        if carries:
            self.writes += 1
            if self._holding:  # a head and its body: one write, now
                self._send()
                return
            self._holding = True
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what was buffered now (one write)."""
        self._scheduled = False
        self._send()

    def _send(self) -> None:
        self._holding = False
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        if not self._transport.is_closing():
            self._transport.write(data)
            if self._close_after_write:
                self._transport.close()

    def close_after_next_write(self) -> None:
        """Close once the next write (of a whole loop turn) has been sent."""
        self._close_after_write = True

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
        self._holding = False
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


class GuardedHttpProtocol(asyncio.Protocol):
    """uvicorn's HTTP protocol, owned and fed by this one: it writes through a
    :class:`CoalescingTransport`, and a request's headers and body have deadlines.

    uvicorn builds it as it builds its own protocols (``config``, ``server_state``,
    ``app_state``, ``_loop``); :func:`guarded_http_protocol` binds the deadlines.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        _check_timeouts(header_timeout, body_timeout)
        self._inner: asyncio.Protocol = _inner_class()(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        self._default_headers = server_state.default_headers
        self._loop = _loop or asyncio.get_running_loop()
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # Only the callbacks that mark where requests begin and end: no call per header.
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's
        self._transport: CoalescingTransport | None = None
        self._awaiting = _Awaiting.HEAD
        self._head_begun = False  # some bytes of the next request have arrived
        self._writes_at_head = -1  # the transport's writes when the last head was complete
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol: each event goes to uvicorn's protocol --------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport: an asyncio.Transport.
        self._transport = CoalescingTransport(cast("asyncio.Transport", transport), self._loop)
        self._inner.connection_made(self._transport)  # type: ignore[arg-type]
        self._arm(self.header_timeout)  # a client that connects and sends nothing is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is not None:
            if self._awaiting is _Awaiting.HEAD:
                self._head_begun = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError:
                self._refuse()
                return
            except httptools.HttpParserUpgrade:
                # The connection is becoming something else (uvicorn decides what): the
                # deadlines of HTTP requests no longer apply.
                self._disarm()
                self._awaiting = _Awaiting.NOTHING
                self._parser = None
        self._inner.data_received(data)
        # Arm here rather than in the parser callbacks: a request that arrives whole in one
        # read never needs a timer. Between requests nothing is timed here: an idle kept-alive
        # connection is uvicorn's keep-alive timeout's to close.
        transport = self._transport
        if self._deadline is None and transport is not None and not transport.is_closing():
            if self._awaiting is _Awaiting.HEAD and self._head_begun:
                self._arm(self.header_timeout)
            elif self._awaiting is _Awaiting.BODY:
                self._arm(self.body_timeout)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- our parser's callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._disarm()
        # A request complete while the one before it has no answer yet is pipelined: it
        # waits (uvicorn pauses reading) for that answer, so its body is not timed.
        pipelined = not self._answered()
        self._writes_at_head = self._writes()
        self._awaiting = _Awaiting.NOTHING if pipelined else _Awaiting.BODY

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting = _Awaiting.HEAD
        self._head_begun = False

    # -- deadlines -------------------------------------------------------------------------

    def _writes(self) -> int:
        return 0 if self._transport is None else self._transport.writes

    def _answered(self) -> bool:
        """Whether the latest complete request's response has begun (written a byte)."""
        return self._writes() > self._writes_at_head

    def _arm(self, seconds: float) -> None:
        self._deadline = self._loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        """The client took too long over a request's headers or body: 408, then close."""
        self._deadline = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._awaiting is _Awaiting.NOTHING:
            return
        if self._awaiting is _Awaiting.HEAD:
            if self._head_begun and not self._answered():
                # The next request's head trickles in while the response before it has not
                # begun (a pipelining client): a 408 would be read as that answer. Send the
                # answer (one write, when it fits), then close.
                transport.close_after_next_write()
                return
            if self._head_begun:  # a connection that never sent a byte is just closed
                message = f"request line and headers not received within {self.header_timeout:g}s"
                self._send_error(408, message, "request_timeout")
        elif not self._answered():
            message = f"request body not received within {self.body_timeout:g}s"
            self._send_error(408, message, "request_timeout")
        # uvicorn's protocol sees the connection lost: the app reading the body gets a
        # disconnect, and whatever it sends is dropped.
        transport.close()

    def _refuse(self) -> None:
        """Bytes that are not HTTP/1.1 get the API's JSON error shape, then close."""
        self._disarm()
        self._parser = None
        self._awaiting = _Awaiting.NOTHING
        message = "Invalid HTTP request received."
        logger.warning(message)
        self._send_error(400, f"{message} The request is not valid HTTP/1.1.", "invalid_http")
        if self._transport is not None:
            self._transport.close()

    def _send_error(self, status: int, message: str, code: str) -> None:
        """Write a JSON error with ``connection: close`` straight to the transport."""
        if self._transport is None:
            return
        body = error_body(status, message, code=code)
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")]
        for name, value in self._default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self._transport.write(b"".join(head))

    def __repr__(self) -> str:
        timed = "armed" if self._deadline is not None else "none"
        return (
            f"<GuardedHttpProtocol awaiting={self._awaiting.name} deadline={timed} "
            f"around {type(self._inner).__name__}>"
        )


@cache
def _inner_class() -> Callable[..., asyncio.Protocol]:
    """uvicorn's protocol for ``http=INNER_HTTP``, found once per process."""
    found: Callable[..., asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS[INNER_HTTP])
    return found


def _check_timeouts(header_timeout: float, body_timeout: float) -> None:
    if header_timeout <= 0 or body_timeout <= 0:
        raise ValueError(
            f"header_timeout and body_timeout must be > 0 seconds, "
            f"got {header_timeout} and {body_timeout}"
        )


def guarded_http_protocol(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT, body_timeout: float = DEFAULT_BODY_TIMEOUT
) -> Callable[..., asyncio.Protocol]:
    """The protocol factory to hand to uvicorn's ``http`` option: uvicorn calls it as it would
    a protocol class, and it pickles (a partial of an importable class), so workers get it."""
    _check_timeouts(header_timeout, body_timeout)
    return partial(GuardedHttpProtocol, header_timeout=header_timeout, body_timeout=body_timeout)
