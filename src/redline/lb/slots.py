"""Spare upstream slots: ports nginx.conf lists before any replica listens on them.

nginx open source cannot change an upstream without a reload, and a reload closes every
idle client keep-alive connection (see the README's load-balancing section). So the
generated upstream lists ``max_replicas`` ports from the start; a slot without a replica is
*held*: bound on 127.0.0.1 but not listening, so nginx's connect is refused at once (a
passive failure, retried on another replica) and no other program can take the port::

    hold = PortHold(8003)      # nginx skips 127.0.0.1:8003
    hold.release()             # a replica may bind it now

A :class:`SlotTable` is the supervisor's list of slots: their ports in slot order, the
spare ones held.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from redline._ports import free_ports
from redline.exceptions import ClusterError

__all__ = ["PortHold", "SlotTable"]


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


class SlotTable:
    """The upstream's replica ports in slot order; a slot without a replica is held.

    Example::

        table = SlotTable([8001, 8002, 8003])
        table.hold_spares(used=2)      # 8003 held: slots 0 and 1 have replicas
        table.take(2)                  # 8003, released for a new replica in slot 2
        table.take(3)                  # a new slot past the end, on a free port
        table.hold(8001)               # its replica left: held again
    """

    def __init__(self, ports: Sequence[int] = ()) -> None:
        self.ports = list(ports)
        self._holds: dict[int, PortHold] = {}

    def __len__(self) -> int:
        return len(self.ports)

    def __repr__(self) -> str:
        return f"SlotTable(ports={self.ports}, held={sorted(self._holds)})"

    def hold_spares(self, used: int) -> None:
        """Hold the ports of every slot from *used* on (they have no replica yet)."""
        for port in self.ports[used:]:
            self._holds[port] = PortHold(port)

    def take(self, index: int) -> int:
        """The port of slot *index* for a new replica: a held one released, or, one past
        the last slot, a new slot on a free port."""
        if index == len(self.ports):
            self.ports.append(free_ports(1)[0])
        else:
            hold = self._holds.pop(self.ports[index], None)
            if hold is not None:
                hold.release()
        return self.ports[index]

    def hold(self, port: int) -> None:
        """Hold *port* again (its replica left); ClusterError if another program took it."""
        self._holds[port] = PortHold(port)

    def release(self) -> None:
        """Release every held port."""
        for hold in self._holds.values():
            hold.release()
        self._holds.clear()


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
