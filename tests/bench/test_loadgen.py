"""The load generator against a real uvicorn server (tests/bench/_app.py)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from redline.bench import LoadConfig, LoadProgress, run_load
from redline.bench.workload import Workload
from redline.exceptions import BenchError
from tests.bench import _app


def _custom(path: str) -> Workload:
    return Workload(route="custom", path=path, body="{}")


async def test_closed_loop_sends_exactly_the_requested_count(app_url: str) -> None:
    result = await run_load(LoadConfig(url=app_url, concurrency=7, requests=333), Workload())
    assert result.completed == 333
    assert result.ok == 333
    assert result.histogram.count == 333
    assert result.statuses == {200: 333}
    assert not result.errors
    assert result.elapsed_s > 0
    assert result.throughput == pytest.approx(333 / result.elapsed_s)


async def test_model_field_is_sent_only_when_given(app_url: str) -> None:
    config = LoadConfig(url=app_url, requests=5)
    default = await run_load(config, Workload())
    assert default.ok == 5  # no "model" field: the server's default
    wrong = await run_load(config, Workload(model="other"))
    assert wrong.errors == {"HTTP 400": 5}
    right = await run_load(config, Workload(model=_app.MODEL_ID))
    assert right.ok == 5
    assert right.model == _app.MODEL_ID


async def test_x_cache_hit_ratio_is_counted(app_url: str) -> None:
    # The app answers hit for an input it has seen before: every hot-set body after its first.
    workload = Workload(repeat=1.0, hot_set_size=5)
    result = await run_load(LoadConfig(url=app_url, concurrency=1, requests=100), workload)
    assert result.cache["miss"] == 5
    assert result.cache["hit"] == 95


async def test_server_timing_is_summed_per_stage(app_url: str) -> None:
    result = await run_load(LoadConfig(url=app_url, concurrency=4, requests=40), Workload())
    assert result.server_timing_requests == 40
    assert result.server_timing_ms["inference"] == pytest.approx(40 * 3.0)
    assert result.server_timing_ms["queue"] == pytest.approx(40 * 1.5)
    assert result.server_timing_client_ms > 0


async def test_server_errors_are_counted_by_status_not_raised(app_url: str) -> None:
    result = await run_load(
        LoadConfig(url=app_url, concurrency=1, requests=30), _custom("/v1/flaky")
    )
    # n % 3 == 0 -> 500 (10 of 30); else n % 5 == 0 -> 429 (5, 10.. minus multiples of 15: 4)
    assert result.statuses == {200: 16, 500: 10, 429: 4}
    assert result.errors == {"HTTP 500": 10, "HTTP 429": 4}
    assert result.ok == 16
    assert result.histogram.count == 16


async def test_unknown_path_counts_404s(app_url: str) -> None:
    result = await run_load(LoadConfig(url=app_url, requests=5), _custom("/nope"))
    assert result.errors == {"HTTP 404": 5}


async def test_unreachable_url_raises_bench_error(dead_url: str) -> None:
    with pytest.raises(
        BenchError, match=r"^cannot reach http://127.0.0.1:\d+: connection refused$"
    ):
        await run_load(LoadConfig(url=dead_url, requests=1), Workload())


async def test_open_loop_achieves_the_target_rate(app_url: str) -> None:
    config = LoadConfig(url=app_url, rate=100.0, duration=2.0)
    result = await run_load(config, _custom("/trivial"))
    # Scheduled sends: exactly rate * duration.
    assert result.completed == 200
    assert result.throughput == pytest.approx(100.0, rel=0.3)


async def test_open_loop_measures_from_the_scheduled_time_so_a_stall_shows(app_url: str) -> None:
    # Request STALL_AT holds the server for STALL_S; under open loop the ~STALL_S * rate
    # requests scheduled behind it all wait, so p99 is a sizeable part of the stall.
    workload = _custom("/v1/stall")
    open_result = await run_load(
        LoadConfig(url=app_url, rate=100.0, duration=2.5, concurrency=4), workload
    )
    assert open_result.ok == 250
    assert open_result.histogram.percentile_ms(99) > 0.5 * _app.STALL_S * 1000
    # With an in-flight cap of 4, the stall also held sends back behind their slots.
    assert open_result.late_sends > 10
    assert open_result.max_send_lag_ms > 0.5 * _app.STALL_S * 1000


async def test_closed_loop_hides_the_same_stall_in_one_request(app_url: str) -> None:
    # The contrast to the open-loop test: one worker sees one slow request out of 250.
    result = await run_load(
        LoadConfig(url=app_url, concurrency=1, requests=250), _custom("/v1/stall")
    )
    assert result.histogram.summary().max_ms > 0.9 * _app.STALL_S * 1000
    assert result.histogram.percentile_ms(99) < 0.5 * _app.STALL_S * 1000


async def test_warmup_is_not_counted(app_url: str) -> None:
    config = LoadConfig(url=app_url, concurrency=2, requests=20, warmup=0.3)
    result = await run_load(config, _custom("/trivial"))
    assert result.completed == 20
    assert result.warmup_completed > 0


async def test_stop_event_ends_the_run_with_a_partial_result(app_url: str) -> None:
    stop = asyncio.Event()
    snapshots: list[LoadProgress] = []
    loop = asyncio.get_running_loop()
    loop.call_later(0.6, stop.set)
    result = await run_load(
        LoadConfig(url=app_url, concurrency=4, duration=60.0),
        _custom("/v1/slow"),
        stop=stop,
        on_progress=snapshots.append,
        progress_interval=0.1,
    )
    assert result.interrupted
    assert 0 < result.completed < 500
    assert result.elapsed_s < 30
    assert snapshots
    assert snapshots[-1].completed == result.completed
    assert 0 < snapshots[-1].fraction < 1  # type: ignore[operator]


async def test_timeouts_are_counted_as_timeout(app_url: str) -> None:
    config = LoadConfig(url=app_url, concurrency=2, requests=4, timeout=0.01)
    result = await run_load(config, _custom("/v1/slow"))
    assert result.errors == {"timeout": 4}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": -1.0}, "--rate must be > 0 requests per second, got -1.0"),
        ({"requests": 5, "duration": 1.0}, "give --requests or --duration, not both"),
        ({"concurrency": 0}, "--concurrency must be >= 1, got 0"),
        ({"requests": 0}, "--requests must be >= 1, got 0"),
        ({"duration": -2.0}, "--duration must be > 0 seconds, got -2.0"),
        ({"warmup": -1.0}, "--warmup must be >= 0 seconds, got -1.0"),
    ],
)
def test_bad_load_configs_raise_bench_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BenchError) as info:
        LoadConfig(url="http://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_url_must_be_http() -> None:
    with pytest.raises(BenchError, match="URL must look like http://HOST:PORT, got 'localhost:80'"):
        LoadConfig(url="localhost:80")


class _ResetOnRequest(asyncio.Protocol):
    """Answers every request by resetting the connection (SO_LINGER 0, then abort)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # type: ignore[attr-defined]


async def test_connection_resets_are_counted_not_raised() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_ResetOnRequest, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_load(
            LoadConfig(url=f"http://127.0.0.1:{port}", concurrency=2, requests=10), Workload()
        )
    finally:
        server.close()
        await server.wait_closed()
    assert result.completed == 10
    assert result.ok == 0
    assert sum(result.errors.values()) == 10
    assert set(result.errors) <= {"connection reset", "server disconnected"}
