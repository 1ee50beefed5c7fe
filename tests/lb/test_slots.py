"""PortHold: a spare slot refuses nginx's connects and keeps the port from other programs."""

from __future__ import annotations

import socket

import pytest

from redline._ports import free_port
from redline.exceptions import ClusterError
from redline.lb.slots import PortHold


def test_held_port_refuses_connections_and_binds_until_released() -> None:
    port = free_port()
    hold = PortHold(port)
    assert hold.held
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))
    hold.release()
    hold.release()  # idempotent
    assert not hold.held
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_port_in_use_cannot_be_held() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(ClusterError, match=f"cannot hold spare port {port}: it is in use"):
            PortHold(port)
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535, got 0"):
        PortHold(0)
