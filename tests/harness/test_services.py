"""The harness itself: each real service starts on a private port and answers."""

from __future__ import annotations

import subprocess

import redis
from redis.cluster import RedisCluster

from tests._services import PostgresServer, RedisClusterServers, RedisServer


def test_redis_server_answers_ping(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    client.close()


def test_redis_cluster_has_three_masters_and_three_replicas(
    redis_cluster: RedisClusterServers,
) -> None:
    roles = redis_cluster.roles(redis_cluster.nodes[0])
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    client.set("harness:{a}", "1")
    assert client.get("harness:{a}") == b"1"
    client.close()


def test_postgres_accepts_queries(postgres: PostgresServer) -> None:
    out = subprocess.run(
        ["psql", postgres.dsn, "-At", "-c", "select 40 + 2"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "42"


def test_nginx_binary_reports_its_version(nginx_binary: str) -> None:
    out = subprocess.run([nginx_binary, "-v"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "nginx/" in out.stderr
