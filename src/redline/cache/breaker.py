"""A circuit breaker: stop waiting on a dead dependency, probe it now and then, recover.

States: ``closed`` (calls go through) → ``open`` after ``failure_threshold`` consecutive
failures (calls fail at once with :class:`~redline.exceptions.CacheUnavailable`, no socket
timeouts) → ``half_open`` once ``reset_timeout`` seconds have passed (one probe call goes
through; the others still fail fast) → ``closed`` when the probe succeeds, ``open`` again
when it fails.

A call made under :meth:`CircuitBreaker.guard` stops waiting the moment the breaker opens
(:class:`~redline.exceptions.CacheUnavailable`), so the calls queued on a frozen dependency
fail together instead of each sitting out its own socket timeout. With ``stall_timeout``
the breaker also opens when guarded calls are waiting and none has finished for that long:
a dependency that went silent (a frozen Redis) is given up on after ``stall_timeout``, not
after ``failure_threshold`` socket timeouts.

Silence is counted from when a call sent its request, never while it sets up a connection:
a client's connection class reports its phases to the guarded call running in the same
task (:func:`connection_setup`, :func:`command_sent`, :func:`answer_received`;
:mod:`redline.cache._redis_connection` does it for redis-py). A call opening a connection
waits under its connect and socket timeouts instead, and any reply read from the
dependency, a handshake's included, shows it alive. A cold pool opening many connections
on a busy box is then not taken for a frozen server. State changes (``open``,
``closed``) and failures are reported through an optional :class:`~redline._events.EventLog`:
one line per change, failures counted. :class:`NodeBreakers` keeps one breaker per node of a
cluster, so one dead node costs only the calls that go to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from redline._events import EventLog
from redline.exceptions import CacheUnavailable

__all__ = [
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "NodeBreakers",
    "answer_received",
    "call_given_up",
    "command_sent",
    "connection_setup",
]

T = TypeVar("T")


class BreakerState(enum.StrEnum):
    """Where a :class:`CircuitBreaker` stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of a :class:`CircuitBreaker`."""

    state: BreakerState
    consecutive_failures: int
    opened_count: int
    rejected: int
    last_error: str | None
    failure_threshold: int
    reset_timeout: float


class CircuitBreaker:
    """Fail fast while a dependency is down; let one probe through after ``reset_timeout``.

    Example::

        breaker = CircuitBreaker(failure_threshold=5, reset_timeout=2.0)
        breaker.allow()                 # raises CacheUnavailable while open
        try:
            reply = await redis.ping()
        except ConnectionError as exc:
            breaker.record_failure(exc)
            raise
        breaker.record_success()

    ``await breaker.call(fn)`` does the same for a coroutine function, counting every
    exception as a failure, and gives up waiting when the breaker opens meanwhile
    (:meth:`guard`). ``stall_timeout`` (seconds, ``None``: off) opens the breaker when guarded
    calls have waited that long with no call finishing. ``timer`` is injectable so tests can
    move time by hand; ``events`` (an :class:`~redline._events.EventLog`) gets a line when the
    breaker opens and when it closes again, and a count of every failure.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 2.0,
        timer: Callable[[], float] = time.monotonic,
        name: str = "breaker",
        events: EventLog | None = None,
        stall_timeout: float | None = None,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold must be an int, got {failure_threshold!r}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not reset_timeout > 0:
            raise ValueError(f"reset_timeout must be > 0, got {reset_timeout}")
        if stall_timeout is not None and not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 or None, got {stall_timeout}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.name = name
        self.events = events
        self.stall_timeout = stall_timeout
        self._timer = timer
        # asyncio.timeout scopes of the guarded calls in flight (-> loop time they started):
        # opening expires them all.
        self._in_flight: dict[asyncio.Timeout, float] = {}
        # the subset that awaits an answer (stall detection): not waits for a message
        self._awaiting: dict[asyncio.Timeout, float] = {}
        self._last_answer = -float("inf")  # loop time a guarded call last finished
        self._watchdog: asyncio.Handle | None = None
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_count = 0
        self._rejected = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None
        self._last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        """The current state (``open`` turns into ``half_open`` only when a call asks)."""
        return self._state

    def allow(self) -> None:
        """Let a call through, or raise :class:`CacheUnavailable` at once while open."""
        if self._state is BreakerState.CLOSED:
            return
        now = self._timer()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at >= self.reset_timeout:
                self._state = BreakerState.HALF_OPEN
                self._probe_started_at = now
                return
        elif self._probe_started_at is None or now - self._probe_started_at >= self.reset_timeout:
            # Half-open and the last probe never reported back (cancelled): send another.
            self._probe_started_at = now
            return
        self._rejected += 1
        raise CacheUnavailable(
            f"circuit breaker {self.name!r} is {self._state.value} after "
            f"{self._failures} consecutive failures (last error: {self._last_error})"
        )

    def record_success(self) -> None:
        """A call went through: reset the failure count and close the breaker."""
        self._failures = 0
        self._probe_started_at = None
        if self._state is not BreakerState.CLOSED:
            self._close("a call went through")

    def record_failure(self, exc: BaseException | None = None) -> None:
        """A call failed: count it, and open the breaker at the threshold or on a failed probe."""
        self._failures += 1
        if exc is not None:
            self._last_error = f"{type(exc).__name__}: {exc}"
        if self.events is not None:
            self.events.failure("call", exc)
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._open()

    def _open(self) -> None:
        was = self._state
        self._state = BreakerState.OPEN
        self._opened_at = self._timer()
        self._probe_started_at = None
        self._opened_count += 1
        if self.events is not None and was is BreakerState.CLOSED:
            # A failed probe re-opens it: the same outage, so no new line.
            self.events.state(
                "open", f"{self._failures} consecutive failures (last: {self._last_error})"
            )
        for scope in list(self._in_flight):
            if not scope.expired():
                scope.reschedule(-1.0)  # in the past: expires at the next loop iteration

    # -- stall detection: calls waiting, none finishing ----------------------------------

    # A call's silence starts when it enters, again when its request is written, and not
    # at all while it sets up a connection; any answer ends everyone's silence.

    def _entered(self, scope: asyncio.Timeout, awaits_answer: bool) -> None:
        now = asyncio.get_running_loop().time()
        self._in_flight[scope] = now
        if awaits_answer:
            self._await_answer(scope, now)

    def _await_answer(self, scope: asyncio.Timeout, since: float) -> None:
        self._awaiting[scope] = since
        if self.stall_timeout is not None and self._watchdog is None:
            due = since + self.stall_timeout
            self._watchdog = asyncio.get_running_loop().call_at(due, self._check_stall)

    def _exited(self, scope: asyncio.Timeout) -> None:
        del self._in_flight[scope]
        if self._awaiting.pop(scope, None) is not None and not scope.expired():
            self._last_answer = asyncio.get_running_loop().time()

    def _silent_since(self) -> float:
        return max(min(self._awaiting.values()), self._last_answer)

    def _check_stall(self) -> None:
        self._watchdog = None
        if not self._awaiting or self.stall_timeout is None:
            return
        loop = asyncio.get_running_loop()
        silent_since = self._silent_since()
        due = silent_since + self.stall_timeout
        if due > loop.time():
            self._watchdog = loop.call_at(due, self._check_stall)
            return
        # Confirm after a few more loop iterations: answers that came while the loop was
        # busy (or this process was not scheduled) are read first, and end the silence.
        self._watchdog = loop.call_later(0.02, self._confirm_stall, silent_since, _CONFIRM_HOPS)

    def _confirm_stall(self, silent_since: float, hops: int) -> None:
        self._watchdog = None
        if not self._awaiting or self.stall_timeout is None:
            return
        loop = asyncio.get_running_loop()
        if self._silent_since() > silent_since:  # an answer came meanwhile
            due = self._silent_since() + self.stall_timeout
            self._watchdog = loop.call_at(due, self._check_stall)
            return
        if hops > 0:  # each hop is one loop iteration: polled sockets, woken readers
            self._watchdog = loop.call_soon(self._confirm_stall, silent_since, hops - 1)
            return
        waited = loop.time() - silent_since
        reason = f"no answer for {waited:.2f}s with {len(self._awaiting)} calls waiting"
        self._failures = max(self._failures + 1, self.failure_threshold)
        self._last_error = reason
        if self.events is not None:
            self.events.failure("call", reason)
        if self._state is not BreakerState.OPEN:
            self._open()

    def _close(self, reason: str) -> None:
        self._state = BreakerState.CLOSED
        if self.events is not None:
            self.events.state("closed", reason, level=logging.INFO)

    def reset(self) -> None:
        """Close the breaker by hand and forget the failures."""
        self._failures = 0
        self._probe_started_at = None
        if self._state is not BreakerState.CLOSED:
            self._close("reset by hand")

    def guard(self, *, awaits_answer: bool = True) -> _Guard:
        """``async with breaker.guard():`` the block stops waiting when the breaker opens.

        The block is cancelled and :class:`CacheUnavailable` raised in its place, so calls
        in flight on a dependency that stopped answering do not each wait out a timeout
        once enough of them have failed. Call :meth:`allow` before entering.
        ``awaits_answer=False`` for a block that waits for something that may rightly take
        long (a pub/sub message): it still gives up on opening, but never counts as a stall.
        """
        return _Guard(self, awaits_answer)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``await fn()`` through the breaker; any exception counts as a failure."""
        self.allow()
        guard = self.guard()
        try:
            async with guard:
                result = await fn()
        except Exception as exc:
            if not guard.aborted:  # given up because the breaker opened: no new failure
                self.record_failure(exc)
            raise
        self.record_success()
        return result

    def clone(self, name: str, events: EventLog | None = None) -> CircuitBreaker:
        """A fresh, closed breaker with this one's settings and clock."""
        return CircuitBreaker(
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
            timer=self._timer,
            name=name,
            events=events,
            stall_timeout=self.stall_timeout,
        )

    def stats(self) -> BreakerStats:
        """A frozen snapshot of the counters."""
        return BreakerStats(
            state=self._state,
            consecutive_failures=self._failures,
            opened_count=self._opened_count,
            rejected=self._rejected,
            last_error=self._last_error,
            failure_threshold=self.failure_threshold,
            reset_timeout=self.reset_timeout,
        )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value}, "
            f"failures={self._failures}/{self.failure_threshold}, "
            f"opened={self._opened_count}, reset_timeout={self.reset_timeout})"
        )


# Loop iterations a stall waits, once due, for answers already received to be read.
_CONFIRM_HOPS = 4


class _Guard:
    """The async context manager of :meth:`CircuitBreaker.guard`."""

    __slots__ = (
        "_awaits_answer",
        "_breaker",
        "_muted",
        "_paused",
        "_scope",
        "_token",
        "aborted",
    )

    def __init__(self, breaker: CircuitBreaker, awaits_answer: bool) -> None:
        self._breaker = breaker
        self._awaits_answer = awaits_answer
        self._scope = asyncio.timeout(None)
        self._token: contextvars.Token[_Guard | None] | None = None
        self._paused = 0  # connection set-ups under way (nested ones count)
        self._muted = 0  # set-ups whose replies come from elsewhere (a topology refresh)
        self.aborted = False  # the breaker opened and the block was given up

    async def __aenter__(self) -> None:
        await self._scope.__aenter__()
        self._breaker._entered(self._scope, self._awaits_answer)
        self._token = _CURRENT_GUARD.set(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _CURRENT_GUARD.reset(self._token)
            self._token = None
        self._breaker._exited(self._scope)
        try:
            await self._scope.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:
            self.aborted = True
            breaker = self._breaker
            raise CacheUnavailable(
                f"circuit breaker {breaker.name!r} opened while this call waited "
                f"(last error: {breaker._last_error})"
            ) from expired

    # -- the phases a client's connection reports (module functions below) ---------------

    @contextlib.contextmanager
    def _setting_up(self, replies_count: bool) -> Iterator[None]:
        breaker, scope = self._breaker, self._scope
        self._paused += 1
        self._muted += not replies_count
        if self._paused == 1:
            breaker._awaiting.pop(scope, None)
        try:
            yield
        finally:
            self._paused -= 1
            self._muted -= not replies_count
            if (
                self._paused == 0
                and self._awaits_answer
                and scope in breaker._in_flight
                and not scope.expired()
            ):
                breaker._await_answer(scope, asyncio.get_running_loop().time())

    def _sent(self) -> None:
        awaiting = self._breaker._awaiting
        if self._paused == 0 and self._scope in awaiting:
            awaiting[self._scope] = asyncio.get_running_loop().time()

    def _answered(self) -> None:
        if self._muted == 0:
            self._breaker._last_answer = asyncio.get_running_loop().time()


# The guarded call running in this task, for the connection it uses to report to.
_CURRENT_GUARD: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar(
    "redline_breaker_guard", default=None
)


@contextlib.contextmanager
def connection_setup(*, replies_count: bool = True) -> Iterator[None]:
    """``with connection_setup():`` around opening a connection (connect and handshake):
    the guarded call in this task is not waiting for an answer meanwhile, so the time is
    no silence; its silence starts when the block ends and its request goes out.

    ``replies_count=False`` for a set-up whose replies come from some other server (a
    Cluster topology refresh inside a node's call): they then prove nothing. Outside a
    guarded call it does nothing.
    """
    guard = _CURRENT_GUARD.get()
    if guard is None:
        yield
        return
    with guard._setting_up(replies_count):
        yield


def call_given_up() -> bool:
    """Whether the guarded call in this task was given up (the breaker opened while it waited)
    yet runs on: the cancellation that gives it up was lost on the way. ``asyncio.wait_for``
    on Python 3.11 (redis-py writes every command under it) returns the result it waited for
    and drops a cancellation that lands in the same loop turn; the call would then wait out its
    own socket timeout. A connection asks before it writes or reads and stops the call."""
    guard = _CURRENT_GUARD.get()
    return guard is not None and guard._scope.expired()


def command_sent() -> None:
    """A request was written on an open connection: the guarded call in this task waits
    for its answer from now on (not from when it entered, maybe queued behind others)."""
    guard = _CURRENT_GUARD.get()
    if guard is not None:
        guard._sent()


def answer_received() -> None:
    """A reply was read from the dependency (a handshake's too): it is alive, so no call
    waiting on its breaker has been in silence until now."""
    guard = _CURRENT_GUARD.get()
    if guard is not None:
        guard._answered()


class NodeBreakers:
    """One :class:`CircuitBreaker` per node (``"host:port"``), made on first use.

    Each is a :meth:`~CircuitBreaker.clone` of *template* named ``"{template.name}@{node}"``
    with its own :class:`~redline._events.EventLog` on *logger*, so every node's outage is
    logged (once per state change) and counted on its own.

    Example::

        breakers = NodeBreakers(CircuitBreaker(failure_threshold=3), logger)
        breakers.get("127.0.0.1:7000").allow()
    """

    def __init__(self, template: CircuitBreaker, logger: logging.Logger) -> None:
        self.template = template
        self.logger = logger
        self._breakers: dict[str, CircuitBreaker] = {}
        self._retired: dict[str, int] = {}  # event counts of the nodes forgotten

    def get(self, node: str) -> CircuitBreaker:
        """The breaker of *node* (a new, closed one the first time it is asked for)."""
        breaker = self._breakers.get(node)
        if breaker is None:
            name = f"{self.template.name}@{node}"
            breaker = self.template.clone(name, EventLog(self.logger, f"cache {name}"))
            self._breakers[node] = breaker
        return breaker

    def __iter__(self) -> Iterator[tuple[str, CircuitBreaker]]:
        return iter(list(self._breakers.items()))

    def __len__(self) -> int:
        return len(self._breakers)

    def retain(self, nodes: Iterable[str]) -> None:
        """Forget the breakers of nodes not in *nodes* (gone from the topology); their
        event counts are kept."""
        keep = set(nodes)
        for node in [node for node in self._breakers if node not in keep]:
            events = self._breakers.pop(node).events
            for event, count in (events.counts() if events else {}).items():
                self._retired[event] = self._retired.get(event, 0) + count

    def event_counts(self) -> dict[str, int]:
        """Every node's event counts, summed (``"state:open"``, ``"failure:call"``...)."""
        total = dict(self._retired)
        for _, breaker in self:
            for event, count in (breaker.events.counts() if breaker.events else {}).items():
                total[event] = total.get(event, 0) + count
        return total

    def __repr__(self) -> str:
        states = ", ".join(f"{node}={b.state.value}" for node, b in self)
        return f"NodeBreakers({states})"
