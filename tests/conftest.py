"""Real services for the whole session, each started on free loopback ports and stopped after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests._services import PostgresServer, RedisClusterServers, RedisServer, require_binary

if TYPE_CHECKING:
    from tests.bench._chromium import Browser

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_TIMER_CANCELLED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)
def pytest_exception_interact(node: pytest.Item | pytest.Collector, call: Any, report: Any) -> None:
    """pytest-timeout cancels its timer here (meant for --pdb, but this hook runs for every
    failed phase): remember it, so that the teardown after a failure gets a timer again."""
    if isinstance(node, pytest.Item) and report.when in ("setup", "call"):
        node.stash[_TIMER_CANCELLED] = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Bound the teardown of a failed test: without this a fixture that hangs after a failure
    (an async ``closing`` fixture awaiting a task that never ends) hangs the whole run, as
    pytest-timeout's timer was cancelled by the failure (either ``timeout_method``)."""
    rearmed = False
    if item.stash.get(_TIMER_CANCELLED, False) and not item.config.getoption("usepdb", False):
        import pytest_timeout  # type: ignore[import-untyped]

        settings = pytest_timeout._get_item_settings(item)
        if settings.timeout and not settings.func_only:
            item.config.pluginmanager.hook.pytest_timeout_set_timer(item=item, settings=settings)
            rearmed = True
    try:
        return (yield)
    finally:
        if rearmed:
            item.config.pluginmanager.hook.pytest_timeout_cancel_timer(item=item)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone Redis for the whole session (flush what you use, or use unique keys)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A private Redis for one test: it may kill and restart it (``.kill()``, ``.start()``)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A real 6-node Redis Cluster (3 masters + 3 replicas); ``.url`` is ``redis+cluster://...``."""
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server; ``.dsn`` is ``postgresql://postgres@127.0.0.1:PORT/redline``."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """Path of the nginx binary (installed by `make test`)."""
    return require_binary("nginx")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the page tests (status pages, HTML reports), one per module."""
    from tests.bench._chromium import Browser

    chromium = Browser()
    try:
        yield chromium
    finally:
        chromium.close()
