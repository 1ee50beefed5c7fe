"""render_nginx_conf: every strategy yields a config `nginx -t` accepts; bad combos raise first."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from redline.exceptions import ConfigError, NginxError
from redline.lb import (
    ClusterOptions,
    HealthCheck,
    NginxOptions,
    RateLimit,
    Strategy,
    UpstreamServer,
    check_nginx_conf,
    make_rate_limit,
    render_nginx_conf,
)


def servers(n: int = 3, **kw: object) -> tuple[UpstreamServer, ...]:
    return tuple(UpstreamServer("127.0.0.1", 18001 + i, **kw) for i in range(n))  # type: ignore[arg-type]


def nginx_accepts(nginx_binary: str, tmp_path: Path, text: str) -> None:
    (tmp_path / "nginx.conf").write_text(text)
    check_nginx_conf(nginx_binary, tmp_path)


def test_template_ships_as_package_data() -> None:
    template = resources.files("redline.lb").joinpath("templates", "nginx.conf.j2")
    assert template.is_file()
    assert "upstream" in template.read_text()


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_passes_nginx_t(
    nginx_binary: str, tmp_path: Path, strategy: Strategy
) -> None:
    opts = NginxOptions(
        servers=(*servers(2), UpstreamServer("127.0.0.1", 18009, down=True)),
        strategy=strategy,
        rate_limit=RateLimit("10r/s", burst=5, nodelay=True),
    )
    text = render_nginx_conf(opts)
    nginx_accepts(nginx_binary, tmp_path, text)
    directive = {
        Strategy.ROUND_ROBIN: None,
        Strategy.LEAST_CONN: "least_conn;",
        Strategy.IP_HASH: "ip_hash;",
        Strategy.RANDOM_TWO: "random two least_conn;",
        Strategy.HASH: "hash $http_x_cache_key consistent;",
    }[strategy]
    if directive:
        assert directive in text
    assert "server 127.0.0.1:18009 weight=1 max_fails=1 fail_timeout=10s down;" in text


def test_backup_with_round_robin_and_least_conn_passes(nginx_binary: str, tmp_path: Path) -> None:
    for strategy in (Strategy.ROUND_ROBIN, Strategy.LEAST_CONN):
        opts = NginxOptions(
            servers=(*servers(2), UpstreamServer("127.0.0.1", 18100, backup=True)),
            strategy=strategy,
        )
        text = render_nginx_conf(opts)
        nginx_accepts(nginx_binary, tmp_path, text)
        assert "server 127.0.0.1:18100 weight=1 max_fails=1 fail_timeout=10s backup;" in text


def test_rendered_config_has_the_required_directives() -> None:
    text = render_nginx_conf(
        NginxOptions(
            servers=servers(2, weight=3, max_fails=2, fail_timeout=1.5),
            keepalive=16,
            rate_limit=RateLimit("100r/s", burst=20),
            worker_processes=2,
            worker_connections=512,
        )
    )
    for needle in (
        "worker_processes 2;",
        "daemon off;",
        "pid nginx.pid;",
        "worker_connections 512;",
        "server 127.0.0.1:18001 weight=3 max_fails=2 fail_timeout=1500ms;",
        "keepalive 16;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Redline-Edge-Id $request_id;",
        "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;",
        "proxy_next_upstream_tries 3;",
        "proxy_next_upstream_timeout 10s;",
        "limit_req_zone $binary_remote_addr zone=redline_rate:10m rate=100r/s;",
        "limit_req zone=redline_rate burst=20;",
        "limit_req_status 429;",
        "client_max_body_size 8m;",
        "proxy_buffering off;",
        "$upstream_addr",
        "$upstream_response_time",
        "$request_time",
        "$upstream_status",
        "location = /nginx-health",
        "add_header X-Upstream $upstream_addr always;",
        "client_body_temp_path temp/client_body;",
        "scgi_temp_path temp/scgi;",
    ):
        assert needle in text, needle
    # non_idempotent only where retrying is safe (the pure embedding/predict routes)
    assert text.count("non_idempotent") == 2
    assert "limit_req" not in render_nginx_conf(NginxOptions(servers=servers(1)))
    assert "daemon off;" not in render_nginx_conf(
        NginxOptions(servers=servers(1), foreground=False)
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: NginxOptions(servers=()), "at least one upstream server is required"),
        (
            lambda: NginxOptions(
                servers=(*servers(1), UpstreamServer("127.0.0.1", 9, backup=True)),
                strategy=Strategy.IP_HASH,
            ),
            "strategy 'ip_hash' cannot have backup servers",
        ),
        (
            lambda: NginxOptions(
                servers=(*servers(1), UpstreamServer("127.0.0.1", 9, backup=True)),
                strategy=Strategy.HASH,
            ),
            "strategy 'hash' cannot have backup servers",
        ),
        (
            lambda: NginxOptions(
                servers=(*servers(1), UpstreamServer("127.0.0.1", 9, backup=True)),
                strategy=Strategy.RANDOM_TWO,
            ),
            "strategy 'random_two' cannot have backup servers",
        ),
        (
            lambda: NginxOptions(servers=servers(1), strategy="fastest"),  # type: ignore[arg-type]
            "unknown strategy 'fastest'; allowed: round_robin",
        ),
        (lambda: UpstreamServer("127.0.0.1", 0), "port must be in 1..65535, got 0"),
        (lambda: UpstreamServer("127.0.0.1", 70000), "port must be in 1..65535, got 70000"),
        (lambda: UpstreamServer("127.0.0.1", 80, weight=0), "weight must be >= 1, got 0"),
        (lambda: UpstreamServer("bad host;", 80), "invalid upstream host 'bad host;'"),
        (lambda: UpstreamServer("a", 80, backup=True, down=True), "cannot be both backup and down"),
        (
            lambda: NginxOptions(servers=(UpstreamServer("a", 1, backup=True),)),
            "must not be a backup",
        ),
        (lambda: NginxOptions(servers=servers(1) * 2), "duplicate upstream servers"),
        (
            lambda: NginxOptions(servers=servers(1), listen="8080"),
            "listen must be 'host:port', got '8080'",
        ),
        (
            lambda: NginxOptions(servers=servers(1), strategy=Strategy.HASH, hash_key="x; evil"),
            "hash_key must be one nginx variable",
        ),
        (
            lambda: NginxOptions(servers=servers(1), next_upstream_tries=0),
            "next_upstream_tries must be >= 1, got 0",
        ),
        (
            lambda: NginxOptions(servers=servers(1), worker_processes=0),
            "worker_processes must be 'auto' or >= 1",
        ),
        (lambda: RateLimit("fast"), "rate must look like '100r/s' or '600r/m', got 'fast'"),
        (lambda: RateLimit("10r/s", burst=-1), "burst must be >= 0, got -1"),
        (lambda: make_rate_limit(None, burst=10), "burst and nodelay need a rate"),
        (lambda: ClusterOptions(replicas=3, weights=(1, 2)), "got 2 weights for 3 replicas"),
        (lambda: ClusterOptions(replicas=2, weights=(1, 0)), "weights must be >= 1, got [1, 0]"),
        (lambda: ClusterOptions(replicas=0), "replicas must be >= 1, got 0"),
        (
            lambda: ClusterOptions(replicas=3, base_port=65534),
            "base_port 65534 with 3 slots leaves 1..65535",
        ),
        (
            lambda: ClusterOptions(replicas=2, max_replicas=4, base_port=65533),
            "base_port 65533 with 4 slots leaves 1..65535",
        ),
        (
            lambda: ClusterOptions(replicas=3, max_replicas=2),
            "max_replicas must be >= replicas (3), got 2",
        ),
        (
            lambda: NginxOptions(servers=servers(1), client_header_timeout=0),
            "client_header_timeout must be > 0 seconds, got 0",
        ),
        (
            lambda: NginxOptions(servers=servers(1), keepalive_requests=0),
            "keepalive_requests must be >= 1, got 0",
        ),
        (lambda: HealthCheck(fall=0), "fall and rise must be >= 1, got 0 and 2"),
        (lambda: HealthCheck(path="ready"), "health check path must start with '/'"),
    ],
)
def test_bad_combinations_raise_config_error(build: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()  # type: ignore[operator]
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_slow_clients_are_cut_by_the_generated_config(nginx_binary: str, tmp_path: Path) -> None:
    text = render_nginx_conf(
        NginxOptions(servers=servers(1), client_header_timeout=5, client_send_timeout=0.5)
    )
    nginx_accepts(nginx_binary, tmp_path, text)
    for line in (
        "client_header_timeout 5s;",
        "client_body_timeout 10s;",
        "send_timeout 500ms;",
        "reset_timedout_connection on;",
        "proxy_read_timeout 60s;",
        "worker_shutdown_timeout 30s;",
        "keepalive_requests 1000;",
    ):
        assert line in text, line


def test_cluster_upstream_lists_every_slot_and_tries_each_once() -> None:
    opts = ClusterOptions(replicas=2, max_replicas=4, base_port=18001, weights=(3, 1))
    upstream = [UpstreamServer("127.0.0.1", p) for p in opts.ports()]
    text = render_nginx_conf(opts.nginx_options(upstream))
    assert opts.ports() == [18001, 18002, 18003, 18004]
    assert "server 127.0.0.1:18001 weight=3 " in text
    assert "server 127.0.0.1:18004 weight=1 " in text
    assert "proxy_next_upstream_tries 4;" in text


def test_render_rejects_non_options() -> None:
    with pytest.raises(TypeError, match="options must be NginxOptions, got dict"):
        render_nginx_conf({})  # type: ignore[arg-type]


def test_nginx_t_failure_is_an_nginx_error(nginx_binary: str, tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text("events {}\nhttp { bogus_directive on; }\n")
    with pytest.raises(NginxError, match='unknown directive "bogus_directive"'):
        check_nginx_conf(nginx_binary, tmp_path)
