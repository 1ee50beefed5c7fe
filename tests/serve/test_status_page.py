"""``GET /status`` of a real ``redline serve``, opened in headless Chromium while load runs.

Screenshots (desktop 1200 px, phone 400 px) are kept in the test's tmp dir
(``pytest --basetemp`` to choose where).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redline.serve.recent import RecentRequests
from redline.serve.settings import load_settings
from redline.serve.state import ServerState
from redline.serve.status_page import StatusReporter
from tests.bench._chromium import Browser, LivePage
from tests.serve._process import serve_process

pytestmark = pytest.mark.slow

FIGURES = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('[data-figure]')]
  .map(e => [e.dataset.figure, e.textContent.trim()])))"""
DASH = "\u2013"  # what the page shows for "no figure"
POLLS = "Number(document.body.dataset.polls || 0)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = Browser()
    try:
        yield chromium
    finally:
        chromium.close()


async def _figures(page: LivePage) -> dict[str, str]:
    figures: dict[str, str] = json.loads(await page.evaluate(FIGURES))
    return figures


def _count(text: str) -> int:
    return int(text.replace(",", ""))


async def _next_poll(page: LivePage) -> dict[str, str]:
    """The figures once the page has drawn one more answer."""
    seen = await page.evaluate(POLLS)
    await page.wait_for(f"{POLLS} > {seen}", timeout=10)
    return await _figures(page)


async def _load(url: str, stop: asyncio.Event, *, concurrency: int = 4) -> int:
    """POST embeddings (a few distinct inputs, so the cache hits) until *stop*; how many."""
    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while not stop.is_set():
            response = await client.post("/v1/embeddings", json={"input": f"text {sent % 7}"})
            assert response.status_code == 200, response.text
            sent += 1

    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return sent


async def test_status_page_figures_change_under_load(browser: Browser, tmp_path: Path) -> None:
    with serve_process(tmp_path, "--cache-url", "memory://") as url:
        async with browser.live(f"{url}/status?refresh=0.3", width=1200) as page:
            idle = await _next_poll(page)
            assert idle["rate"] == "0 req/s"
            assert idle["p99"] == DASH
            assert idle["loop-lag"].endswith(" ms")  # redline_event_loop_lag_seconds
            stop = asyncio.Event()
            load = asyncio.create_task(_load(url, stop))
            await page.wait_for(f"{POLLS} > 0 && {FIGURES}.includes('ms')", timeout=10)
            first = await _next_poll(page)
            second = await _next_poll(page)
            stop.set()
            sent = await load
            assert sent > 0
            # under load the figures move between two polls
            assert _count(second["served"]) > _count(first["served"]) > 0
            for figures in (first, second):
                assert figures["rate"] != "0 req/s"
                assert figures["p50"].endswith(" ms")
                assert figures["p99"].endswith(" ms")
                assert figures["hit-ratio-memory"].endswith("%")
                assert _count(figures["batches"]) > 0
            served = _count((await _figures(page))["served"])
            assert 0 < served <= sent
            await page.wait_for(f"JSON.parse({FIGURES})['in-flight'].startsWith('0') ", timeout=10)
            final = await _next_poll(page)
            (tmp_path / "status-desktop.png").write_bytes(await page.screenshot())
            assert await page.evaluate("document.documentElement.scrollWidth") <= 1200
            assert page.console_errors == []
            assert all(r.startswith(url + "/") for r in page.requests), page.requests
            assert final["hit-ratio-memory"] != DASH
        async with browser.live(f"{url}/status", width=400, mobile=True) as phone:
            await phone.wait_for(POLLS, timeout=10)
            (tmp_path / "status-phone.png").write_bytes(await phone.screenshot())
            assert await phone.evaluate("document.documentElement.scrollWidth") <= 400
            assert phone.console_errors == []


async def test_status_json_needs_a_key_like_metrics(browser: Browser, tmp_path: Path) -> None:
    env = {"REDLINE_API_KEYS": "k-status", "REDLINE_METRICS_AUTH": "true"}
    with serve_process(tmp_path, **env) as url:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            refused = await client.get("/status.json")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "missing_api_key"
            wrong = await client.get("/status.json", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            good = await client.get("/status.json", headers={"Authorization": "Bearer k-status"})
            assert good.status_code == 200
            assert good.json()["kind"] == "server"
            openapi = (await client.get("/openapi.json")).json()
            assert "401" in openapi["paths"]["/status.json"]["get"]["responses"]
        async with browser.live(f"{url}/status?refresh=0.3", width=400, mobile=True) as page:
            await page.wait_for("document.querySelector('#key.shown')", timeout=10)
            assert await page.evaluate(POLLS) == 0  # nothing drawn without the key
            await page.evaluate(
                "document.querySelector('#key input').value = 'k-status';"
                "document.querySelector('#key button').click()"
            )
            await page.wait_for(POLLS, timeout=10)
            assert "rate" in await _figures(page)


def test_recent_requests_window_leaves_out_old_and_excluded_requests() -> None:
    now = [100.0]
    recent = RecentRequests(capacity=4, timer=lambda: now[0])
    now[0] = 120.0
    recent.record("/v1/embeddings", 200, 0.5)  # outside a 10 s window at t=131
    now[0] = 125.0
    recent.record("/metrics", 200, 9.0)
    recent.record("/v1/embeddings", 500, 0.2)
    recent.record("/v1/embeddings", 429, 0.1)
    now[0] = 131.0
    window = recent.window(10.0, exclude={"/metrics"})
    assert (window.count, window.errors, window.rejected) == (2, 1, 1)
    assert (window.p50_seconds, window.p99_seconds) == (0.1, 0.2)
    assert window.rate == pytest.approx(0.2)
    recent.record("/v1/embeddings", 200, 0.3)  # the buffer wraps: the window is shorter
    assert recent.window(60.0).span_seconds == pytest.approx(6.0)


def test_event_loop_lag_is_the_windowed_mean_of_the_servers_histogram() -> None:
    clock = [0.0]
    state = ServerState(load_settings(model="redline.serve.testing:create_hashing_model"))
    reporter = StatusReporter(state, window=10.0, timer=lambda: clock[0])
    lag = state.metrics.loop_lag
    lag.observe(1.0)  # before the window
    reporter.document()
    clock[0] = 5.0
    lag.observe(0.002)
    lag.observe(0.004)
    assert reporter.document()["event_loop_lag_seconds"] == pytest.approx(0.003)
