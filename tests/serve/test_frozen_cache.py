"""A real ``redline serve`` under load while its Redis is frozen (SIGSTOP) for 4 s.

Keep-alive clients (one connection each) send a mix of repeated and new inputs before,
during and after the freeze. Every request must get its 200 with its vectors, every
acknowledged request must have its usage row once the server stopped, the server must count
what happened (``redline_cache_events_total``), and its log must hold a few lines per cause,
not one per request. Speed is measured in ``benchmarks/faults_bench.py`` (server rows), not
asserted here.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from redline._services.processes import frozen_for
from tests._services import RedisServer
from tests.serve._process import serve_process

CLIENTS = 8
WARM_UP = 2.0
FREEZE = 4.0
AFTER = 2.0
MAX_LINES_PER_CAUSE = 5

# "<component> is <state>..." and "<component>: <what> failed..." (redline._events.EventLog)
_EVENT_LINE = re.compile(r"^(?P<cause>.+? is \S+?|.+?: .+? failed)(?=:| |$)")


def log_causes(log: str) -> Counter[str]:
    """WARNING-or-worse lines of a server log, counted per cause: a health event's component
    and state or failure; any other line by its text with the numbers taken out."""
    causes: Counter[str] = Counter()
    for line in log.splitlines():
        parts = line.split(" ", 4)  # date time LEVEL logger message
        if len(parts) < 5 or parts[2] not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        message = parts[4]
        match = _EVENT_LINE.match(message)
        text = match.group("cause") if match else message
        causes[f"{parts[3]} {re.sub(r'[0-9.]+', '#', text)}"] += 1
    return causes


def test_log_causes_groups_event_lines_and_repeated_lines() -> None:
    log = "\n".join(
        [
            "2026-01-01 10:00:00,1 WARNING redline.cache.redis cache redis is open: 3 failures",
            "2026-01-01 10:00:01,1 INFO redline.cache.redis cache redis is closed: back",
            "2026-01-01 10:00:02,1 WARNING redline.x cache redis: call failed: TimeoutError",
            "2026-01-01 10:00:03,1 WARNING redline.x cache redis: call failed 9 more times (x)",
            "2026-01-01 10:00:04,1 WARNING redline.y cache read failed, computing: 1.5 s",
            "2026-01-01 10:00:05,1 WARNING redline.y cache read failed, computing: 2.5 s",
        ]
    )
    assert log_causes(log) == {
        "redline.cache.redis cache redis is open": 1,
        "redline.x cache redis: call failed": 2,
        "redline.y cache read failed, computing: # s": 2,
    }


async def _client(
    url: str,
    index: int,
    stop: asyncio.Event,
    records: list[tuple[float, float, str]],
) -> None:
    """One keep-alive connection sending requests back to back until *stop*: each asks for
    one input many requests repeat and one never seen before."""
    rng = random.Random(index)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        sent = 0
        while not stop.is_set():
            inputs = [f"repeated {rng.randrange(40)}", f"new {index} {sent}"]
            sent += 1
            started = time.monotonic()
            try:
                response = await client.post("/v1/embeddings", json={"input": inputs})
                ok = response.status_code == 200 and len(response.json()["data"]) == 2
                outcome = "ok" if ok else f"status {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            records.append((started, time.monotonic() - started, outcome))


def _metric(text: str, tier: str, event: str) -> float:
    """A sample of ``redline_cache_events_total`` (0 when absent)."""
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        labels, _, value = rest.partition("} ")
        if name == "redline_cache_events_total" and set(labels.split(",")) == {
            f'event="{event}"',
            f'tier="{tier}"',
        }:
            return float(value)
    return 0.0


@pytest.mark.slow
async def test_requests_do_not_fail_or_flood_the_log_while_redis_is_frozen(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    assert fresh_redis.proc is not None
    redis_pid = fresh_redis.proc.pid
    cache_url = f"{fresh_redis.url}?tiered=1&namespace=frozen"
    records: list[tuple[float, float, str]] = []
    with serve_process(tmp_path, "--cache-url", cache_url, REDLINE_HASHING_DELAY_MS="5") as url:
        stop = asyncio.Event()
        clients = [asyncio.create_task(_client(url, i, stop, records)) for i in range(CLIENTS)]
        try:
            await asyncio.sleep(WARM_UP)
            frozen_at, thawed_at = await frozen_for(redis_pid, FREEZE)
            await asyncio.sleep(AFTER)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            metrics = (await client.get("/metrics")).text
        port = int(url.rsplit(":", 1)[1])
    # serve_process stopped the server (SIGTERM): it flushed its usage rows on the way out.
    failed = [outcome for _, _, outcome in records if outcome != "ok"]
    during = [r for r in records if frozen_at <= r[0] < thawed_at]
    with sqlite3.connect(tmp_path / "data" / "redline.db") as database:
        (rows,) = database.execute("SELECT count(*) FROM redline_usage").fetchone()
    log = (tmp_path / f"serve-{port}.log").read_text(errors="replace")
    flooded = {cause: n for cause, n in log_causes(log).items() if n > MAX_LINES_PER_CAUSE}
    counted = _metric(metrics, "request_path", "failure:read over budget") + _metric(
        metrics, "request_path", "failure:read"
    )
    problems = {
        "requests failed": (len(failed), failed[:5]) if failed else None,
        "no request sent during the freeze": not during or None,
        "no request after it": not any(t >= thawed_at for t, _, _ in records) or None,
        # the freeze reached the server: its breaker opened, the request path counted it
        "breaker never opened": _metric(metrics, "redis", "state:open") < 1 or None,
        "no late or failed cache read counted": counted < 1 or None,
        "usage rows != acknowledged requests": (rows, len(records))
        if rows != len(records)
        else None,
        f"log lines per cause over {MAX_LINES_PER_CAUSE}": flooded or None,
    }
    assert not {what: found for what, found in problems.items() if found}
