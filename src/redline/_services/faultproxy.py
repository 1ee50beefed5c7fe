"""A fault-injecting TCP proxy for the tests and benchmarks (Toxiproxy-style, loopback only).

>>> proxy = FaultProxy(("127.0.0.1", redis_port)).start()
>>> client = Redis(port=proxy.port)         # talks to Redis through the proxy
>>> proxy.set_mode("blackhole")             # open connections go silent (a half-open link)
>>> proxy.set_mode("pass")
>>> proxy.stop()

Modes, switchable at any time, also while connections are open:

* ``pass``: bytes flow both ways;
* ``blackhole``: connections stay open and their bytes are read, but nothing is forwarded in
  either direction (the peer looks alive to TCP and never answers); new connections are
  accepted and treated the same;
* ``delay``: every chunk is forwarded ``delay`` seconds late (order is kept);
* ``reset``: every open connection is closed with a TCP reset, and new ones are reset as soon
  as they are accepted.

Apart from the mode, ``set_setup_delay(seconds)`` holds each new connection that long before
anything flows, so a client's connect handshake is slow while the connections already open
answer at once (a cold pool on a busy box).

The proxy runs its own event loop in a daemon thread, so a test that blocks its own loop (or
has none) does not stall the traffic it forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from concurrent.futures import Future
from typing import Any

from redline._services.processes import HOST

__all__ = ["MODES", "FaultProxy"]

MODES = ("pass", "blackhole", "delay", "reset")


class FaultProxy:
    """One listening port forwarding to ``upstream``; see the module docstring."""

    def __init__(self, upstream: tuple[str, int], *, port: int = 0) -> None:
        host, _ = upstream
        if host != HOST:
            raise ValueError(f"the fault proxy forwards to loopback only, got {host!r}")
        self.upstream = upstream
        self.port = port
        self.mode = "pass"
        self.delay = 0.0
        self.setup_delay = 0.0
        self.accepted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()

    def __repr__(self) -> str:
        return (
            f"<FaultProxy port={self.port} -> {self.upstream[1]} mode={self.mode} "
            f"open={len(self._links)} accepted={self.accepted}>"
        )

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def start(self) -> FaultProxy:
        ready: Future[None] = Future()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._listen())
            except BaseException as exc:  # surface a bind failure to start()
                ready.set_exception(exc)
                return
            ready.set_result(None)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        ready.result(timeout=10)
        return self

    def set_mode(self, mode: str, *, delay: float = 0.0) -> None:
        """Switch the mode (``delay`` seconds for ``delay`` mode); returns once it applies."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "delay" and delay <= 0:
            raise ValueError(f"delay mode needs delay > 0, got {delay}")
        self._call(self._apply(mode, delay))

    def set_setup_delay(self, seconds: float) -> None:
        """Hold each connection accepted from now on *seconds* before forwarding (0: off)."""
        if seconds < 0:
            raise ValueError(f"setup delay must be >= 0, got {seconds}")
        self._call(self._apply_setup_delay(seconds))

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy's own loop -------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fault proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _apply(self, mode: str, delay: float) -> None:
        self.mode, self.delay = mode, delay
        if mode == "reset":
            for client, upstream in list(self._links):
                _reset(client)
                if upstream is not None:
                    _reset(upstream)
            self._links.clear()

    async def _apply_setup_delay(self, seconds: float) -> None:
        self.setup_delay = seconds

    async def _close(self) -> None:
        await self._apply("reset", 0.0)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            _reset(writer)
            return
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]
        if self.setup_delay:  # what the client sends meanwhile waits in the reader
            await asyncio.sleep(self.setup_delay)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, link), self._pump(up_reader, writer, link)
            )
        finally:
            self._links.discard(link)
            for side in (writer, up_writer):
                side.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None],
    ) -> None:
        try:
            while True:
                chunk = await source.read(65536)
                if not chunk:
                    break
                if self.mode == "blackhole":
                    continue
                if self.mode == "delay":
                    await asyncio.sleep(self.delay)
                if link not in self._links:
                    break
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other, as a real TCP path would.
            for side in link:
                if side is not None:
                    side.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
