"""EventLog: a line per state change; failures counted, summarised once per interval."""

from __future__ import annotations

import logging

import pytest

from redline._events import EventLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, interval: float = 10.0) -> EventLog:
    return EventLog(
        logging.getLogger("redline.test.events"), "redis", interval=interval, timer=clock
    )


def test_a_storm_of_failures_writes_one_line_per_interval(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    events = make(clock)
    with caplog.at_level(logging.WARNING, logger="redline.test.events"):
        for i in range(10_000):
            clock.now = i * 0.003  # 30 s of failures at ~333/s
            events.failure("get", ConnectionError("refused"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # the first, then one summary per 10 s
    assert lines[0] == "redis: get failed: ConnectionError: refused"
    assert "more times" in lines[1]
    assert events.counts() == {"failure:get": 10_000}


def test_state_changes_are_logged_once_each_with_what_was_held_back(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    events = make(clock)
    with caplog.at_level(logging.INFO, logger="redline.test.events"):
        assert events.state("closed", level=logging.INFO) is True  # initial healthy: silent
        assert events.state("open", "5 consecutive failures") is True
        assert events.state("open") is False
        for _ in range(50):
            events.failure("get", "timeout")
        assert events.state("closed", level=logging.INFO) is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "redis is open: 5 consecutive failures",
        "redis: get failed: timeout",
        "redis is closed (49 more get failures)",
    ]
    assert events.current == "closed"
    assert events.counts() == {"state:closed": 2, "state:open": 1, "failure:get": 50}


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval must be > 0"):
        EventLog(logging.getLogger("x"), "x", interval=0)
