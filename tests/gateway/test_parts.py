"""The gateway's parts on their own: spec parsing, token shares, the ejector, the route."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from redline._ports import free_port
from redline.exceptions import ConfigError, UpstreamRejected, UpstreamUnavailable
from redline.gateway import OutlierEjector, Upstream, parse_upstream
from redline.gateway.client import UpstreamClient
from redline.gateway.router import ModelRoute
from redline.gateway.tokens import split_tokens
from tests.gateway._fake import FakeUpstream


def test_a_spec_keeps_foreign_query_parameters_in_the_url() -> None:
    config = parse_upstream(
        "oa=http://127.0.0.1:9000/v1/?kind=openai&model=m1&model=m2&alias=s:m1"
        "&key_env=OA_KEY&api-version=2024&timeout=2.5"
    )
    assert config.base_url == "http://127.0.0.1:9000/v1?api-version=2024"
    assert config.models == ("m1", "m2")
    assert config.aliases == {"s": "m1"}
    assert (config.max_inputs, config.max_tokens) == (2048, 300_000)
    assert config.timeout == 2.5
    assert "OA_KEY" in repr(config)


async def test_the_base_urls_own_query_follows_each_endpoints_path() -> None:
    """It used to be sent as ``?api-version=2024/v1/embeddings``: a path of ``/``."""
    with FakeUpstream(dimension=4) as fake:
        config = parse_upstream(f"oa={fake.url}/base?api-version=2024&model=fake")
        async with UpstreamClient(config) as client:
            await client.list_models(timeout=5)
            reply = await client.embed("fake", ["a"], dimensions=None, timeout=5)
        assert reply.vectors.shape == (1, 4)
        assert fake.paths == [
            "/base/v1/models?api-version=2024",
            "/base/v1/embeddings?api-version=2024",
        ]


def test_the_api_key_comes_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_upstream("t=http://127.0.0.1:1?key_env=REDLINE_TEST_KEY")
    monkeypatch.delenv("REDLINE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="REDLINE_TEST_KEY"):
        config.api_key()
    monkeypatch.setenv("REDLINE_TEST_KEY", "sk-secret")
    assert config.api_key() == "sk-secret"
    assert "sk-secret" not in repr(config)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nourl", "NAME=http"),
        ("a=ftp://x", "http"),
        ("a=http://h:1?max_inputs=0", "max_inputs must be >= 1"),
        ("a=http://h:1?max_inputs=lots", "must be a number"),
        ("a=http://h:1?kind=tei", "kind must be one of"),
        ("a=http://h:1?alias=nocolon", "ALIAS:MODEL"),
        ("a b=http://h:1", "upstream name"),
    ],
)
def test_a_bad_spec_is_a_config_error_naming_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_upstream(spec)


def test_token_shares_add_up_to_the_upstream_total() -> None:
    assert split_tokens(5, [2, 3]) == [2, 3]
    assert split_tokens(7, [2, 3]) == [3, 4]
    assert sum(split_tokens(101, [1, 1, 1])) == 101
    assert split_tokens(-1, [4, 2]) == [4, 2]


def test_the_ejector_ejects_after_the_threshold_and_lets_one_probe_through() -> None:
    now = [0.0]
    ejector = OutlierEjector(threshold=2, cooldown=1.0, timer=lambda: now[0])
    ejector.record_failure("refused")
    assert ejector.available()
    ejector.record_failure("refused")
    assert not ejector.available()
    assert ejector.state().startswith("ejected for 1.0s")
    now[0] = 1.5
    assert ejector.available()  # the probe
    assert not ejector.available()  # only one
    ejector.record_failure("still refused")  # a failed probe: ejected again, twice as long
    now[0] = 2.5
    assert not ejector.available()
    now[0] = 3.6
    assert ejector.available()
    ejector.record_success()
    assert ejector.available()
    assert ejector.state() == "healthy"


async def test_the_route_fails_over_and_ejects_a_dead_upstream() -> None:
    dead = Upstream(parse_upstream(f"dead=http://127.0.0.1:{free_port()}?model=fake"))
    with FakeUpstream(dimension=4) as fake:
        live = Upstream(parse_upstream(f"live={fake.url}?model=fake"))
        await dead.open()
        await live.open()
        try:
            route = ModelRoute("fake", [dead, live])
            for n in range(6):
                reply = await route.embed([f"t{n}"], dimensions=None, deadline=time.monotonic() + 5)
                assert reply.vectors.shape == (1, 4)
            assert dead.ejector.stats().ejections == 1
            assert len(fake.embedding_calls) == 6
            fake.mode = "400"
            with pytest.raises(UpstreamRejected, match="bad dimensions"):
                await route.embed(["x"], dimensions=None, deadline=time.monotonic() + 5)
            fake.stop()
            with pytest.raises(UpstreamUnavailable, match="dead: ") as caught:
                await route.embed(["y"], dimensions=None, deadline=time.monotonic() + 5)
            assert "live: " in str(caught.value)
        finally:
            await dead.close()
            await live.close()


def test_settings_read_several_upstreams_and_reject_a_bad_one() -> None:
    from redline.serve.settings import load_settings

    settings = load_settings(upstreams="a=http://127.0.0.1:1?model=m, b=http://127.0.0.1:2")
    assert settings.upstreams == ("a=http://127.0.0.1:1?model=m", "b=http://127.0.0.1:2")
    with pytest.raises(ConfigError, match=r"REDLINE_UPSTREAMS.*NAME=http"):
        load_settings(upstreams="not-a-spec")


def test_serve_help_offers_the_upstream_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "redline", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    assert "--upstream" in out


async def test_a_caller_cancelled_while_queueing_does_not_strand_its_inputs() -> None:
    from redline.gateway.dispatcher import Dispatcher

    async def store(rows: object) -> None:
        return None

    with FakeUpstream(dimension=4) as fake:
        fake.mode = "slow:0.3"
        upstream = Upstream(parse_upstream(f"up={fake.url}?model=fake"))
        await upstream.open()
        dispatcher = Dispatcher(
            ModelRoute("fake", [upstream]),
            None,
            store=store,
            max_inputs=1,
            max_tokens=100,
            concurrency=1,
        )
        await dispatcher.start()
        try:
            deadline = time.monotonic() + 5
            first = asyncio.create_task(dispatcher.embed(["a"], deadline=deadline))
            await asyncio.sleep(0.05)  # "a" holds the only call slot
            second = asyncio.create_task(dispatcher.embed(["b"], deadline=deadline))
            await asyncio.sleep(0.05)  # "b" waits for the slot, holding the batch worker
            third = asyncio.create_task(dispatcher.embed(["c"], deadline=deadline))
            await asyncio.sleep(0.05)  # "c" waits in the batcher's queue
            third.cancel()
            with pytest.raises(asyncio.CancelledError):
                await third
            rows = await dispatcher.embed(["c"], deadline=time.monotonic() + 5)
            assert rows["c"].vector.shape == (4,)
            assert (await first)["a"].tokens == 1
            assert (await second)["b"].tokens == 1
        finally:
            await dispatcher.close()
            await upstream.close()


async def test_with_every_upstream_out_of_rotation_the_route_answers_at_once() -> None:
    dead = [
        Upstream(parse_upstream(f"{name}=http://127.0.0.1:{free_port()}?model=m"))
        for name in ("a", "b")
    ]
    for upstream in dead:
        await upstream.open()
    try:
        route = ModelRoute("m", dead)
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable, match="unreachable") as caught:
            await route.embed(["x"], dimensions=None, deadline=started + 5)
        elapsed = time.monotonic() - started
        assert "a: ejected" in str(caught.value)
        assert "b: ejected" in str(caught.value)
        assert elapsed < 1.0  # no waiting out cooldowns until the deadline
    finally:
        for upstream in dead:
            await upstream.close()


def test_an_unset_key_env_stops_serve_before_it_starts() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDLINE_TEST_UNSET_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "redline",
            "serve",
            "--model",
            "none",
            "--upstream",
            "a=http://127.0.0.1:1?model=m&key_env=REDLINE_TEST_UNSET_KEY",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert "REDLINE_TEST_UNSET_KEY" in result.stderr
    assert "is unset" in result.stderr
