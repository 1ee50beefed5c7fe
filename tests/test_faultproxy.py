"""The test suite's fault-injecting proxy, in front of a real Redis: every mode, switched live."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests._faultproxy import FaultProxy
from tests._services import HOST, RedisServer


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy((HOST, redis_server.port)) as running:
        yield running


def client(proxy: FaultProxy, timeout: float = 0.5) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=proxy.port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def test_modes_switch_while_a_connection_is_open(proxy: FaultProxy) -> None:
    conn = client(proxy)
    assert conn.ping() is True
    assert proxy.open_connections == 1

    proxy.set_mode("blackhole")  # the same connection now hangs: a half-open link
    with pytest.raises(redis.TimeoutError):
        conn.execute_command("PING")

    proxy.set_mode("delay", delay=0.3)
    fresh = client(proxy, timeout=5)
    started = time.monotonic()
    assert fresh.ping() is True
    assert time.monotonic() - started >= 0.3  # each direction waits: at least one delay

    proxy.set_mode("reset")
    assert proxy.open_connections == 0
    with pytest.raises(redis.ConnectionError):
        fresh.connection_pool.get_connection().read_response()
    with pytest.raises(redis.ConnectionError):
        client(proxy).ping()  # new connections are reset on accept

    proxy.set_mode("pass")
    assert client(proxy).ping() is True
    conn.close()
    fresh.close()


def test_a_setup_delay_holds_new_connections_only(proxy: FaultProxy) -> None:
    open_before = client(proxy)
    assert open_before.ping() is True
    proxy.set_setup_delay(0.4)
    started = time.monotonic()
    assert open_before.ping() is True
    assert time.monotonic() - started < 0.3  # an open connection answers at once
    started = time.monotonic()
    assert client(proxy, timeout=5).ping() is True
    assert time.monotonic() - started >= 0.4  # a new one waits before anything flows
    proxy.set_setup_delay(0)
    with pytest.raises(ValueError, match="setup delay must be >= 0"):
        proxy.set_setup_delay(-1)
    open_before.close()


def test_bad_modes_and_non_loopback_upstreams_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        proxy.set_mode("drop")
    with pytest.raises(ValueError, match="delay mode needs delay > 0"):
        proxy.set_mode("delay")
    with pytest.raises(ValueError, match="loopback only"):
        FaultProxy(("10.0.0.1", 6379))
    assert "mode=pass" in repr(proxy)
