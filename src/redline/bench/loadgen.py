"""The load generator: closed loop (N workers back to back) and open loop (a fixed send rate).

Closed loop keeps ``concurrency`` requests in flight and measures each from its send. Open
loop schedules request *i* at ``t0 + i / rate`` and measures it **from that scheduled time**,
so a server stall that delays sends shows up in the latencies instead of silently lowering
the rate (coordinated omission); sends that went out more than ``LATE_SEND_S`` after their
slot are counted as ``late_sends``.

Example::

    config = LoadConfig(url="http://127.0.0.1:8000", concurrency=8, requests=1000)
    result = await run_load(config, Workload())
    result.histogram.summary().p99_ms, result.throughput
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from redline.bench.config import LoadConfig
from redline.bench.metrics_scrape import parse_server_timing
from redline.bench.result import TIMELINE_SLOT_S, LoadProgress, LoadResult
from redline.bench.stats import LatencyHistogram
from redline.bench.workload import RequestSampler, Workload
from redline.exceptions import BenchError

__all__ = ["LATE_SEND_S", "check_reachable", "run_load"]

#: An open-loop send this much later than its scheduled slot counts as late.
LATE_SEND_S = 0.010

_STOP_GRACE_S = 1.0


class _Phase:
    """One measured (or warm-up) phase: sends requests and records their outcome."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: LoadConfig,
        sampler: RequestSampler,
        stop: asyncio.Event,
        timer: Callable[[], float],
    ) -> None:
        self.session = session
        self.config = config
        self.sampler = sampler
        self.stop = stop
        self.timer = timer
        self.url = config.url.rstrip("/") + sampler.path
        self.result = LoadResult()
        self.started = timer()
        self.recent: list[tuple[float, float]] = []
        self.track_recent = False
        self.model_seen: str | None = None

    async def send(self, scheduled: float | None) -> None:
        body = self.sampler.next_body()
        start = self.timer()
        if scheduled is not None:
            lag = start - scheduled
            if lag > LATE_SEND_S:
                self.result.late_sends += 1
            self.result.max_send_lag_ms = max(self.result.max_send_lag_ms, lag * 1000.0)
            start = scheduled
        error: str | None = None
        status = 0
        x_cache: str | None = None
        timing: str | None = None
        try:
            async with self.session.request(self.sampler.method, self.url, data=body) as response:
                data = await response.read()
                status = response.status
                if self.model_seen is None and status < 400:
                    self.model_seen = _model_of(data)
                x_cache = response.headers.get("X-Cache")
                timing = response.headers.get("Server-Timing")
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            error = "connection refused" if refused else "connection error"
        except (TimeoutError, aiohttp.ServerTimeoutError):
            error = "timeout"
        except aiohttp.ServerDisconnectedError:
            error = "server disconnected"
        except aiohttp.ClientOSError as exc:
            reset = exc.errno in (errno.ECONNRESET, errno.EPIPE)
            error = "connection reset" if reset else f"connection error ({exc.strerror})"
        except aiohttp.ClientError as exc:
            error = f"client error ({type(exc).__name__})"
        end = self.timer()
        if status >= 400:
            error = f"HTTP {status}"
        self._record(end, end - start, status, error, x_cache, timing)

    def _record(
        self,
        end: float,
        latency: float,
        status: int,
        error: str | None,
        x_cache: str | None,
        timing: str | None,
    ) -> None:
        result = self.result
        result.completed += 1
        slot = int((end - self.started) / TIMELINE_SLOT_S)
        if status:
            result.statuses[status] += 1
        if error is not None:
            result.errors[error] += 1
            result.timeline_errors[slot] += 1
            return
        result.ok += 1
        result.histogram.record(latency)
        result.timeline.setdefault(slot, array("d")).append(latency * 1000.0)
        if self.track_recent:
            self.recent.append((end, latency))
        result.cache[(x_cache or "none").strip().lower()] += 1
        if timing:
            stages = parse_server_timing(timing)
            if stages:
                result.server_timing_requests += 1
                result.server_timing_client_ms += latency * 1000.0
                for name, value in stages.items():
                    result.server_timing_ms[name] = result.server_timing_ms.get(name, 0.0) + value

    async def run_closed(self, requests: int | None, duration: float | None) -> None:
        deadline = None if duration is None else self.started + duration
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while not self.stop.is_set():
                if requests is not None:
                    if issued >= requests:
                        return
                    issued += 1
                if deadline is not None and self.timer() >= deadline:
                    return
                await self.send(None)

        workers = [asyncio.create_task(worker()) for _ in range(self.config.in_flight_limit)]
        await self._wait(workers)

    async def run_open(self, rate: float, requests: int | None, duration: float | None) -> None:
        interval = 1.0 / rate
        limit = asyncio.Semaphore(self.config.in_flight_limit)
        tasks: set[asyncio.Task[None]] = set()
        index = 0
        t0 = self.timer()

        async def one(scheduled: float) -> None:
            try:
                await self.send(scheduled)
            finally:
                limit.release()

        while not self.stop.is_set():
            if requests is not None and index >= requests:
                break
            scheduled = t0 + index * interval
            if duration is not None and scheduled >= t0 + duration:
                break
            delay = scheduled - self.timer()
            if delay > 0:
                await asyncio.sleep(delay)
                if self.stop.is_set():
                    break
            await limit.acquire()
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        await self._wait(list(tasks))

    async def _wait(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for ``tasks``; once ``stop`` is set, give them a short grace, then cancel."""
        if not tasks:
            return
        pending: set[asyncio.Future[Any]] = set(tasks)
        stop_waiter: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        try:
            while pending and not self.stop.is_set():
                _done, rest = await asyncio.wait(
                    pending | {stop_waiter}, return_when=asyncio.FIRST_COMPLETED
                )
                pending = rest - {stop_waiter}
            if pending:
                _done, pending = await asyncio.wait(pending, timeout=_STOP_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            stop_waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_waiter
        for task in tasks:
            error = None if task.cancelled() or not task.done() else task.exception()
            if error is not None:
                raise error

    def progress(self, planned: float | None, by_count: int | None) -> LoadProgress:
        now = self.timer()
        self.recent = [(end, latency) for end, latency in self.recent if end >= now - 1.0]
        window = LatencyHistogram()
        for _end, latency in self.recent:
            window.record(latency)
        elapsed = now - self.started
        fraction: float | None = None
        if by_count:
            fraction = min(self.result.completed / by_count, 1.0)
        elif planned:
            fraction = min(elapsed / planned, 1.0)
        return LoadProgress(
            elapsed_s=elapsed,
            completed=self.result.completed,
            errors=sum(self.result.errors.values()),
            recent_rps=len(self.recent) / min(max(elapsed, 1e-9), 1.0),
            recent_p99_ms=window.percentile_ms(99.0),
            fraction=fraction,
        )


def _model_of(data: bytes) -> str:
    """The ``model`` an OpenAI-style response names ('' when it names none): for the report."""
    try:
        payload = json.loads(data)
    except ValueError:
        return ""
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else ""


async def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Open (and close) one TCP connection to the server; :class:`BenchError` if impossible."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except ConnectionRefusedError as exc:
        raise BenchError(f"cannot reach {url}: connection refused") from exc
    except TimeoutError as exc:
        raise BenchError(f"cannot reach {url}: no answer within {timeout:g}s") from exc
    except OSError as exc:
        raise BenchError(f"cannot reach {url}: {exc.strerror or exc}") from exc
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def run_load(
    config: LoadConfig,
    workload: Workload,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[LoadProgress], None] | None = None,
    progress_interval: float = 0.25,
    seed: int | None = None,
    before_measuring: Callable[[], Awaitable[None]] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> LoadResult:
    """Run one benchmark (warm-up, then the measured phase) and return what it measured.

    Set ``stop`` (e.g. from a SIGINT handler) to end early: in-flight requests get a short
    grace, and the partial result comes back with ``interrupted=True``. ``before_measuring``
    is awaited after the warm-up, right before the measured phase (to scrape ``/metrics``).

    Example::

        result = await run_load(LoadConfig(url=url, requests=500), Workload(repeat=0.5))
    """
    await check_reachable(config.url)
    stop = stop if stop is not None else asyncio.Event()
    connector = aiohttp.TCPConnector(limit=config.in_flight_limit, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    headers = {"Content-Type": "application/json", **dict(config.headers)}
    warmup_completed = 0
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, raise_for_status=False
    ) as session:
        sampler = workload.sampler(seed)
        if config.warmup > 0:
            warm = _Phase(session, config, sampler, stop, timer)
            await _run_phase(warm, config, None, config.warmup, on_progress, progress_interval)
            warmup_completed = warm.result.completed
        if before_measuring is not None:
            await before_measuring()
        phase = _Phase(session, config, sampler, stop, timer)
        await _run_phase(
            phase,
            config,
            config.requests,
            config.effective_duration,
            on_progress,
            progress_interval,
        )
        result = phase.result
        result.elapsed_s = timer() - phase.started
    result.interrupted = stop.is_set()
    result.model = workload.model or phase.model_seen
    result.warmup_completed = warmup_completed
    return result


async def _run_phase(
    phase: _Phase,
    config: LoadConfig,
    requests: int | None,
    duration: float | None,
    on_progress: Callable[[LoadProgress], None] | None,
    interval: float,
) -> None:
    """Run one phase with a progress ticker beside it."""
    ticker: asyncio.Task[None] | None = None
    if on_progress is not None:
        callback = on_progress
        phase.track_recent = True

        async def tick() -> None:
            while True:
                await asyncio.sleep(interval)
                callback(phase.progress(duration, requests))

        ticker = asyncio.create_task(tick())
    try:
        if config.rate is not None:
            await phase.run_open(config.rate, requests, duration)
        else:
            await phase.run_closed(requests, duration)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    if on_progress is not None:
        on_progress(phase.progress(duration, requests))
