"""Spare upstream slots: ports nginx.conf lists before any replica listens on them.

nginx open source cannot change an upstream without a reload, and a reload closes every
idle client keep-alive connection (see the README's load-balancing section). So the
generated upstream lists ``max_replicas`` ports from the start; a slot without a replica is
*held*: bound on 127.0.0.1 but not listening, so nginx's connect is refused at once (a
passive failure, retried on another replica) and no other program can take the port::

    hold = PortHold(8003)      # nginx skips 127.0.0.1:8003
    hold.release()             # a replica may bind it now
"""

from __future__ import annotations

import socket

from redline.exceptions import ClusterError

__all__ = ["PortHold"]


class PortHold:
    """A loopback TCP port bound without ``listen()``: connections to it are refused."""

    def __init__(self, port: int) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.port = port
        self._sock: socket.socket | None = _bind(port, reuse=False) or _bind(port, reuse=True)
        if self._sock is None:
            raise ClusterError(f"cannot hold spare port {port}: it is in use")

    def __repr__(self) -> str:
        return f"PortHold(port={self.port}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether the port is still held."""
        return self._sock is not None

    def release(self) -> None:
        """Free the port (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _bind(port: int, *, reuse: bool) -> socket.socket | None:
    """A socket bound to 127.0.0.1:*port*, or None if the port is taken.

    Without SO_REUSEADDR no other socket can bind the port; a port a replica has just left
    still has TIME_WAIT connections, which only SO_REUSEADDR binds past (then another
    SO_REUSEADDR socket could bind it too, but none can listen on it while a replica does).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock
