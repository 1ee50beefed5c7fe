"""NginxMaster and Replica directly: backup servers, reload, quit, no strays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from redline.exceptions import NginxError
from redline.lb import (
    NginxMaster,
    NginxOptions,
    Replica,
    Strategy,
    UpstreamServer,
    find_nginx,
    render_nginx_conf,
)
from tests._services import free_port, wait_for_port
from tests.lb.conftest import load, standin_command


@pytest.fixture
async def standins(tmp_path: Path) -> AsyncIterator[list[Replica]]:
    replicas = [
        Replica(i, free_port(), standin_command, log_dir=tmp_path / "logs") for i in range(3)
    ]
    for r in replicas:
        r.start()
    for r in replicas:
        wait_for_port(r.port, timeout=60)
    yield replicas
    for r in replicas:
        await r.stop()


async def test_backup_takes_traffic_only_when_all_primaries_are_down(
    nginx_binary: str, tmp_path: Path, standins: list[Replica]
) -> None:
    primary_a, primary_b, backup = standins
    listen = f"127.0.0.1:{free_port()}"
    options = NginxOptions(
        servers=(
            UpstreamServer("127.0.0.1", primary_a.port),
            UpstreamServer("127.0.0.1", primary_b.port),
            UpstreamServer("127.0.0.1", backup.port, backup=True),
        ),
        listen=listen,
        strategy=Strategy.LEAST_CONN,
        worker_processes=1,
    )
    nginx = NginxMaster(nginx_binary, tmp_path / "run")
    await nginx.write_and_check(render_nginx_conf(options))
    await nginx.start(options.listen_port)
    try:
        url = f"http://{listen}/v1/embeddings"
        result = await load(url, 60, concurrency=3)
        assert result.failures == 0
        assert set(result.upstreams) == {
            f"127.0.0.1:{primary_a.port}",
            f"127.0.0.1:{primary_b.port}",
        }
        await primary_a.stop()
        result = await load(url, 20, concurrency=2)
        assert result.failures == 0
        assert all(str(backup.port) not in u for u in result.upstreams), result.upstreams
        await primary_b.stop()
        result = await load(url, 20, concurrency=2)
        assert result.failures == 0
        assert {u.split(", ")[-1] for u in result.upstreams} == {f"127.0.0.1:{backup.port}"}
    finally:
        await nginx.quit()
    assert not nginx.running


async def test_reload_applies_a_new_config_and_rejects_a_bad_one(
    nginx_binary: str, tmp_path: Path, standins: list[Replica]
) -> None:
    listen = f"127.0.0.1:{free_port()}"

    def conf(*replicas: Replica) -> str:
        servers = tuple(UpstreamServer("127.0.0.1", r.port) for r in replicas)
        return render_nginx_conf(NginxOptions(servers=servers, listen=listen, worker_processes=1))

    nginx = NginxMaster(nginx_binary, tmp_path / "run")
    await nginx.write_and_check(conf(standins[0]))
    await nginx.start(int(listen.rsplit(":", 1)[1]))
    assert f"pid={nginx.pid}" in repr(nginx)
    try:
        with pytest.raises(NginxError, match="nginx is already running"):
            await nginx.start(1)
        url = f"http://{listen}/v1/embeddings"
        assert set((await load(url, 10)).upstreams) == {f"127.0.0.1:{standins[0].port}"}
        await nginx.write_and_check(conf(standins[1]))
        await nginx.reload()
        # old workers finish their connections; new ones use the new upstream
        for _ in range(100):
            if set((await load(url, 4)).upstreams) == {f"127.0.0.1:{standins[1].port}"}:
                break
        else:
            raise AssertionError("reload did not take effect")
        with pytest.raises(NginxError, match="nginx rejected"):
            await nginx.write_and_check("events {}\nhttp { nonsense; }\n")
        assert f"127.0.0.1:{standins[1].port}" in nginx.conf.read_text()  # kept the good one
    finally:
        await nginx.quit()


def test_find_nginx_with_a_bad_explicit_path(tmp_path: Path, nginx_binary: str) -> None:
    with pytest.raises(
        NginxError, match=r"nginx not found at .*install it \(apt-get install nginx\)"
    ):
        find_nginx(str(tmp_path / "nope"))
    assert find_nginx(nginx_binary) == nginx_binary


def test_replica_rejects_bad_port(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535, got 0"):
        Replica(0, 0, standin_command, log_dir=tmp_path)


async def test_slowloris_client_is_cut_by_client_header_timeout(
    nginx_binary: str, tmp_path: Path
) -> None:
    """A header line every 0.5 s never completes a request: nginx drops it after 2 s."""
    import asyncio
    import time

    port = free_port()
    options = NginxOptions(
        servers=(UpstreamServer("127.0.0.1", free_port()),),
        listen=f"127.0.0.1:{port}",
        client_header_timeout=2.0,
    )
    nginx = NginxMaster(nginx_binary, tmp_path)
    await nginx.write_and_check(render_nginx_conf(options))
    await nginx.start(port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        began = time.monotonic()
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        cut_after = None
        for i in range(40):  # 20 s of drip-fed headers at most
            await asyncio.sleep(0.5)
            try:
                writer.write(f"X-Drip-{i}: y\r\n".encode())
                await writer.drain()
                if await asyncio.wait_for(reader.read(1024), 0.01) == b"":
                    cut_after = time.monotonic() - began
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                cut_after = time.monotonic() - began
                break
        writer.close()
        assert cut_after is not None, "nginx held the slow client for 20 s"
        assert cut_after < 10.0, cut_after
    finally:
        await nginx.quit()
