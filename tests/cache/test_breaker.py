"""CircuitBreaker with an injected clock: closed → open → half-open → closed (or open again)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest

from redline._events import EventLog
from redline.cache.breaker import (
    BreakerState,
    CircuitBreaker,
    NodeBreakers,
    answer_received,
    command_sent,
    connection_setup,
)
from redline.exceptions import CacheUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_timeout=2.0, timer=clock, name="redis")


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.allow()
        breaker.record_failure(ConnectionError("refused"))


def test_it_stays_closed_below_the_threshold(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    breaker.allow()
    assert breaker.stats().consecutive_failures == 2


def test_a_success_resets_the_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_it_opens_at_the_threshold_and_then_fails_fast(breaker: CircuitBreaker) -> None:
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CacheUnavailable, match=r"circuit breaker 'redis' is open after 3"):
        breaker.allow()
    stats = breaker.stats()
    assert stats.opened_count == 1
    assert stats.rejected == 1
    assert stats.last_error == "ConnectionError: refused"


def test_after_reset_timeout_one_probe_goes_through(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 1.99
    with pytest.raises(CacheUnavailable):
        breaker.allow()
    clock.now += 0.01
    breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CacheUnavailable, match="is half_open"):
        breaker.allow()  # everyone else still fails fast


def test_a_successful_probe_closes_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 2
    breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats().consecutive_failures == 0
    breaker.allow()


def test_a_failed_probe_opens_it_again_for_another_reset_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 2
    breaker.allow()
    breaker.record_failure(TimeoutError("slow"))
    assert breaker.state is BreakerState.OPEN
    assert breaker.stats().opened_count == 2
    clock.now += 1
    with pytest.raises(CacheUnavailable):
        breaker.allow()
    clock.now += 1
    breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_probe_that_never_reports_back_is_replaced_after_reset_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 2
    breaker.allow()  # this probe is cancelled and never records a result
    clock.now += 2
    breaker.allow()  # a new probe is allowed
    assert breaker.state is BreakerState.HALF_OPEN


def test_failures_of_calls_started_before_opening_do_not_extend_the_open_time(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 1.5
    breaker.record_failure(ConnectionError("late"))
    clock.now += 0.5
    breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


async def test_call_counts_exceptions_and_successes(breaker: CircuitBreaker) -> None:
    async def boom() -> int:
        raise OSError("down")

    async def fine() -> int:
        return 7

    for _ in range(3):
        with pytest.raises(OSError, match="down"):
            await breaker.call(boom)
    with pytest.raises(CacheUnavailable):
        await breaker.call(fine)
    breaker.reset()
    assert await breaker.call(fine) == 7
    assert breaker.state is BreakerState.CLOSED


def test_stats_are_frozen_and_repr_shows_live_state(breaker: CircuitBreaker) -> None:
    fail(breaker, 1)
    stats = breaker.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.opened_count = 9  # type: ignore[misc]
    assert repr(breaker) == (
        "CircuitBreaker(name='redis', state=closed, failures=1/3, opened=0, reset_timeout=2.0)"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1, got 0"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold must be an int, got 1.5"),
        ({"reset_timeout": 0}, ValueError, "reset_timeout must be > 0, got 0"),
    ],
)
def test_bad_settings_are_refused(
    kwargs: dict[str, float], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


# -- giving up in flight, logging, one breaker per node -----------------------------------


async def test_calls_in_flight_give_up_when_the_breaker_opens(breaker: CircuitBreaker) -> None:
    waiting = [asyncio.ensure_future(breaker.call(lambda: asyncio.sleep(30))) for _ in range(5)]
    await asyncio.sleep(0)
    fail(breaker, 3)  # other calls fail: the breaker opens
    done, pending = await asyncio.wait(waiting, timeout=1.0)
    assert not pending, "calls in flight kept waiting after the breaker opened"
    for task in done:
        with pytest.raises(CacheUnavailable, match="opened while this call waited"):
            task.result()
    # giving up is not a failure of its own
    assert breaker.stats().consecutive_failures == 3


async def test_a_guarded_call_that_finishes_is_left_alone(breaker: CircuitBreaker) -> None:
    async def answer() -> int:
        return 42

    assert await breaker.call(answer) == 42
    assert breaker.state is BreakerState.CLOSED


def test_state_changes_are_logged_once_each_and_failures_counted(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    events = EventLog(logging.getLogger("redline.test.breaker"), "redis", timer=clock)
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=2.0, timer=clock, events=events)
    caplog.set_level(logging.INFO, logger="redline.test.breaker")
    for _ in range(5):  # an outage with four failed probes: still one "open" line
        fail(breaker, 3 if breaker.state is BreakerState.CLOSED else 1)
        clock.now += 2.0
    breaker.allow()
    breaker.record_success()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4, messages  # first failure, open, first failed probe, closed
    assert "redis is open: 3 consecutive failures" in messages[1]
    assert messages[-1].startswith("redis is closed")
    assert events.counts() == {"failure:call": 7, "state:open": 1, "state:closed": 1}


def test_node_breakers_keep_one_breaker_and_one_log_per_node(clock: FakeClock) -> None:
    template = CircuitBreaker(failure_threshold=2, reset_timeout=1.0, timer=clock, name="redis")
    breakers = NodeBreakers(template, logging.getLogger("redline.test.nodes"))
    a, b = breakers.get("10.0.0.1:7000"), breakers.get("10.0.0.2:7000")
    assert breakers.get("10.0.0.1:7000") is a
    assert a.name == "redis@10.0.0.1:7000"
    assert (a.failure_threshold, a.reset_timeout) == (2, 1.0)
    fail(a, 2)
    assert a.state is BreakerState.OPEN
    assert b.state is BreakerState.CLOSED  # one node's outage leaves the other alone
    b.allow()
    assert breakers.event_counts() == {"failure:call": 2, "state:open": 1}
    breakers.retain(["10.0.0.2:7000"])  # 10.0.0.1 left the topology: its counts stay
    assert len(breakers) == 1
    assert breakers.event_counts() == {"failure:call": 2, "state:open": 1}
    assert breakers.get("10.0.0.1:7000") is not a  # back later: a fresh, closed breaker


async def test_calls_waiting_with_none_finishing_open_it_after_the_stall_timeout() -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, stall_timeout=0.2)
    started = time.monotonic()
    waiting = [asyncio.ensure_future(breaker.call(lambda: asyncio.sleep(30))) for _ in range(3)]
    done, pending = await asyncio.wait(waiting, timeout=2.0)
    assert not pending
    assert 0.2 <= time.monotonic() - started < 1.0
    assert breaker.state is BreakerState.OPEN
    assert "no answer for" in (breaker.stats().last_error or "")
    for task in done:
        with pytest.raises(CacheUnavailable, match="opened while this call waited"):
            task.result()


async def test_a_slow_call_among_calls_that_keep_finishing_is_not_a_stall() -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, stall_timeout=0.2)
    slow = asyncio.ensure_future(breaker.call(lambda: asyncio.sleep(0.6)))
    for _ in range(12):  # answers keep coming while the slow call waits
        await breaker.call(lambda: asyncio.sleep(0.05))
    await slow
    assert breaker.state is BreakerState.CLOSED


async def test_a_quiet_wait_for_a_message_is_not_a_stall_but_still_gives_up_on_opening() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=10.0, stall_timeout=0.1)

    async def wait_quietly() -> None:
        async with breaker.guard(awaits_answer=False):
            await asyncio.sleep(30)

    waiting = asyncio.ensure_future(wait_quietly())
    await asyncio.sleep(0.4)  # four stall timeouts with nothing answered: no trip
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 2)
    with pytest.raises(CacheUnavailable, match="opened while this call waited"):
        await asyncio.wait_for(waiting, 1.0)


# A connection's phases, as redline.cache._redis_connection reports them from inside a call.


async def test_setting_up_a_connection_is_no_silence() -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, stall_timeout=0.1)

    async def cold_call() -> str:
        with connection_setup():  # connect and handshake: the connect timeouts' business
            await asyncio.sleep(0.4)
        command_sent()
        await asyncio.sleep(0.02)  # then the answer comes quickly
        return "ok"

    assert await asyncio.gather(*(breaker.call(cold_call) for _ in range(5))) == ["ok"] * 5
    assert breaker.state is BreakerState.CLOSED


async def test_silence_after_the_set_up_still_opens_it_one_stall_timeout_later() -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, stall_timeout=0.2)

    async def cold_call_on_a_frozen_server() -> None:
        with connection_setup():
            await asyncio.sleep(0.3)
        command_sent()
        await asyncio.sleep(30)

    started = time.monotonic()
    with pytest.raises(CacheUnavailable, match="opened while this call waited"):
        await asyncio.wait_for(breaker.call(cold_call_on_a_frozen_server), 5.0)
    assert 0.5 <= time.monotonic() - started < 1.5  # set-up, then the stall timeout
    assert breaker.state is BreakerState.OPEN


async def test_a_reply_read_on_any_connection_ends_the_silence() -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, stall_timeout=0.2)

    async def handshakes_answered() -> None:
        with connection_setup():  # a pool opening connections, one reply after another
            for _ in range(12):
                await asyncio.sleep(0.05)
                answer_received()

    slow = asyncio.ensure_future(breaker.call(lambda: asyncio.sleep(0.6)))
    await breaker.call(handshakes_answered)
    await slow
    assert breaker.state is BreakerState.CLOSED


async def test_replies_from_another_server_prove_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=5, reset_timeout=10.0, stall_timeout=0.2)

    async def topology_refresh() -> None:
        with connection_setup(replies_count=False):
            for _ in range(40):
                await asyncio.sleep(0.05)
                answer_received()

    frozen = asyncio.ensure_future(breaker.call(lambda: asyncio.sleep(30)))
    refresh = asyncio.ensure_future(breaker.call(topology_refresh))
    for task in (frozen, refresh):
        with pytest.raises(CacheUnavailable, match="opened while this call waited"):
            await asyncio.wait_for(task, 5.0)
    assert "no answer for" in (breaker.stats().last_error or "")


def test_the_phases_do_nothing_outside_a_guarded_call() -> None:
    with connection_setup():
        command_sent()
        answer_received()


async def test_answers_that_came_while_the_loop_was_blocked_are_read_before_a_stall() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=10.0, stall_timeout=0.1)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])

    async def ask() -> bytes:
        writer.write(b"ping\n")
        return await reader.readline()

    call = asyncio.ensure_future(breaker.call(ask))
    await asyncio.sleep(0.01)  # asked
    time.sleep(0.4)  # noqa: ASYNC251  # the loop blocked: the answer and the watchdog are late
    assert await call == b"ping\n"
    assert breaker.state is BreakerState.CLOSED
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
