"""``GET /status`` of a real ``redline serve``, opened in headless Chromium while load runs.

Screenshots (desktop 1200 px, phone 400 px) are kept in the test's tmp dir
(``pytest --basetemp`` to choose where).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from redline.serve.recent import RecentRequests
from redline.serve.settings import load_settings
from redline.serve.state import ServerState
from redline.serve.status_page import StatusReporter
from tests.bench._chromium import Browser, LivePage
from tests.gateway._procs import HASHING, Serve
from tests.serve._process import serve_process

pytestmark = pytest.mark.slow

FIGURES = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('[data-figure]')]
  .map(e => [e.dataset.figure, e.textContent.trim()])))"""
DASH = "\u2013"  # what the page shows for "no figure"
POLLS = "Number(document.body.dataset.polls || 0)"
SECOND = "tests.gateway._procs:create_second_hashing_model"


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
            # served > 0: the load has begun (the loop-lag figure alone already reads "ms")
            await page.wait_for(f"{POLLS} > 0 && JSON.parse({FIGURES}).served !== '0'", timeout=10)
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


async def test_each_local_models_queue_and_batches(browser: Browser) -> None:
    """Two local models, one slow with batches of one: its queue fills while the other's
    stays empty; status.json shows each model's queue and batches, the page a row each."""
    env = {"REDLINE_HASHING_DELAY_MS": "300", "REDLINE_MAX_BATCH_SIZE": "1"}  # "hashing" slow
    with Serve("--model", HASHING, "--model", SECOND, env=env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def status() -> dict[str, Any]:
                response = await client.get("/status.json")
                assert response.status_code == 200, response.text
                document: dict[str, Any] = response.json()
                return document

            def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
                return {model["name"]: model for model in document["models"]}

            idle = await status()  # the window's start: the batches below fall in it
            assert [(m["name"], m["default"]) for m in idle["models"]] == [
                ("hashing", True),
                ("second", False),
            ]
            capacity = idle["models"][0]["queue"]["capacity"]
            assert capacity > 0
            assert idle["queue"] == {"depth": 0, "capacity": 2 * capacity}
            for i in range(3):
                body = {"input": f"second {i}", "model": "second"}
                assert (await client.post("/v1/embeddings", json=body)).status_code == 200

            slow = [
                asyncio.create_task(
                    client.post("/v1/embeddings", json={"input": f"slow {i}", "model": "hashing"})
                )
                for i in range(4)
            ]
            deadline = time.monotonic() + 30
            while True:
                busy = await status()
                if by_name(busy)["hashing"]["queue"]["depth"] >= 1:
                    break
                assert time.monotonic() < deadline, busy
                await asyncio.sleep(0.05)
            assert by_name(busy)["second"]["queue"]["depth"] == 0
            assert busy["queue"]["depth"] == by_name(busy)["hashing"]["queue"]["depth"]
            assert all(m["alive"] for m in busy["models"])
            for answer in await asyncio.gather(*slow):
                assert answer.json()["model"] == "hashing"

            done = by_name(await status())
            assert done["hashing"]["batches"] == {"count": 4, "mean_size": 1.0}
            assert done["second"]["batches"] == {"count": 3, "mean_size": 1.0}
            assert done["hashing"]["queue"]["depth"] == 0

        async with browser.live(f"{server.url}/status?refresh=0.3", width=1200) as page:
            await page.wait_for(POLLS, timeout=10)
            rows = await page.evaluate(
                "[...document.querySelectorAll('tr[data-model]')].map(r => r.dataset.model)"
            )
            assert rows == ["hashing", "second"]
            figures = await _figures(page)
            assert figures["queue-hashing"] == f"0 / {capacity:,}"
            assert figures["queue-second"] == f"0 / {capacity:,}"
            assert "batches-second" in figures
            assert page.console_errors == []
