"""PortHold: a spare slot refuses nginx's connects and keeps the port from other programs;
SlotTable: the supervisor's slots, the spare ones held."""

from __future__ import annotations

import socket

import pytest

from redline._ports import free_port, free_ports
from redline.exceptions import ClusterError
from redline.lb.slots import PortHold, SlotTable


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


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_slot_table_holds_the_spare_slots_and_hands_them_out_in_order() -> None:
    ports = free_ports(3)
    table = SlotTable(ports)
    table.hold_spares(used=1)
    try:
        assert [_bindable(port) for port in ports] == [True, False, False]
        assert table.take(1) == ports[1]  # released for the new replica
        assert [_bindable(port) for port in ports] == [True, True, False]
        assert _refuses(ports[2])
        assert table.take(2) == ports[2]
        grown = table.take(3)  # past the last slot: a new one
        assert len(table) == 4
        assert grown not in ports
        assert table.ports[3] == grown
        table.hold(ports[0])  # its replica left
        assert not _bindable(ports[0])
    finally:
        table.release()
    assert all(_bindable(port) for port in table.ports)
