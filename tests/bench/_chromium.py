"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for page tests.

One browser per test module; each :meth:`Browser.visit` opens a fresh tab at a given window
size, loads a file, and returns what a person would check: the rendered DOM, every request
the page made, every console error or uncaught exception, whether it overflows sideways, and
a full-page PNG screenshot. :meth:`Browser.live` keeps a tab open on a URL instead, for pages
that change by themselves (the status pages): evaluate expressions in it over time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests._services import require_binary

_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:\d+)/devtools/browser/")


@dataclass
class Visit:
    """What one page load showed."""

    dom: str
    figures: list[tuple[str, str, str]]  # (data-run, data-figure, visible text)
    charts: dict[str, dict[str, int]]  # chart name -> series name -> points drawn
    requests: list[str]
    console_errors: list[str] = field(default_factory=list)
    scroll_width: int = 0
    viewport_width: int = 0


class Browser:
    """A headless Chromium process with remote debugging on a private loopback port."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(
            prefix="redline-chromium-",
            ignore_cleanup_errors=True,  # its helpers may still write
        )
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        args = [require_binary("chromium"), "--headless", "--disable-gpu", "--no-sandbox"]
        args += ["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
        args += [f"--user-data-dir={self._profile.name}", "--no-first-run", "about:blank"]
        # Chromium itself is not under test: a browser that died while starting (seen once in a
        # full run on a loaded box, exit before "DevTools listening") is started once more.
        for attempt in (1, 2):
            self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log)
            endpoint = self._wait_for_endpoint(30.0)
            if endpoint is not None:
                self.endpoint = endpoint
                return
            if attempt == 1 and self._proc.poll() is not None:
                continue
            break
        log = self._log_text()
        self.close()
        raise RuntimeError(
            f"chromium did not start (exit code {self._proc.returncode}): {log[-2000:]}"
        )

    def _log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _wait_for_endpoint(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _LISTENING.search(self._log_text())
            if found:
                return found.group(1)
            if self._proc.poll() is not None:
                return None
            time.sleep(0.1)
        return None

    def visit(self, page: Path, *, width: int, screenshot: Path, mobile: bool = False) -> Visit:
        """Load ``page`` in a new tab ``width`` CSS pixels wide; save a full-page screenshot."""
        uri = page.resolve().as_uri()
        visit, png = asyncio.run(asyncio.wait_for(self._visit(uri, width, mobile), 60))
        screenshot.write_bytes(png)
        return visit

    async def _visit(self, uri: str, width: int, mobile: bool) -> tuple[Visit, bytes]:
        http = self.endpoint.replace("ws://", "http://")
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{http}/json/new?about:blank") as response:
                target = await response.json(content_type=None)
            try:
                async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    return await _Tab(ws).load(uri, width, mobile)
            finally:
                async with session.get(f"{http}/json/close/{target['id']}"):
                    pass

    @contextlib.asynccontextmanager
    async def live(self, url: str, *, width: int, mobile: bool = False) -> AsyncIterator[LivePage]:
        """A new tab ``width`` CSS pixels wide on *url*, open until the block ends."""
        http = self.endpoint.replace("ws://", "http://")
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{http}/json/new?about:blank") as response:
                target = await response.json(content_type=None)
            try:
                async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    tab = _Tab(ws)
                    for domain in ("Page", "Network", "Runtime", "Log"):
                        await tab.call(f"{domain}.enable")
                    metrics = {"width": width, "deviceScaleFactor": 1, "mobile": mobile}
                    await tab.call("Emulation.setDeviceMetricsOverride", height=900, **metrics)
                    await tab.call("Page.navigate", url=url)
                    await tab.wait_until_loaded(url)
                    yield LivePage(tab, metrics)
            finally:
                async with session.get(f"{http}/json/close/{target['id']}"):
                    pass

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        self._log.close()
        self._profile.cleanup()


class LivePage:
    """An open tab: evaluate JavaScript, wait for a condition, take screenshots."""

    def __init__(self, tab: _Tab, metrics: dict[str, Any]) -> None:
        self.tab = tab
        self._metrics = metrics

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of *expression* in the page."""
        result = await self.tab.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float) -> Any:
        """Evaluate *expression* until it is truthy; its value (AssertionError past *timeout*)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} still {value!r} after {timeout}s")
            await asyncio.sleep(0.05)

    async def screenshot(self) -> bytes:
        """A full-page PNG screenshot (the viewport stretched to the content)."""
        layout = await self.tab.call("Page.getLayoutMetrics")
        height = math.ceil(layout["cssContentSize"]["height"])
        await self.tab.call("Emulation.setDeviceMetricsOverride", height=height, **self._metrics)
        shot = await self.tab.call("Page.captureScreenshot", format="png")
        await self.tab.call("Emulation.setDeviceMetricsOverride", height=900, **self._metrics)
        return base64.b64decode(shot["data"])

    @property
    def requests(self) -> list[str]:
        """Every URL the page asked for so far."""
        return [
            e["params"]["request"]["url"]
            for e in self.tab.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    @property
    def console_errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and browser log errors so far."""
        return _console_errors(self.tab.events)


_READ_PAGE = """(() => {
  const figures = [...document.querySelectorAll('[data-figure]')].map(
    e => [e.dataset.run || '', e.dataset.figure, e.textContent.trim()]);
  const charts = {};
  for (const svg of document.querySelectorAll('svg[data-chart]')) {
    const series = {};
    for (const g of svg.querySelectorAll('g[data-series]')) {
      series[g.dataset.series] = g.querySelector('polyline').points.numberOfItems;
    }
    for (const g of svg.querySelectorAll('g[data-bar]')) {
      series[g.dataset.bar] = g.querySelectorAll('rect').length;
    }
    charts[svg.dataset.chart] = series;
  }
  return JSON.stringify({figures, charts, dom: document.documentElement.outerHTML,
    scrollWidth: document.documentElement.scrollWidth, viewport: window.innerWidth});
})()"""


class _Tab:
    """One DevTools page session: commands by id, events collected as they arrive."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") == ident:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result
            if "method" in data:
                self.events.append(data)
        raise RuntimeError(f"DevTools connection closed during {method}")

    async def wait_until_loaded(self, uri: str) -> None:
        # Not Page.loadEventFired: the new tab's own about:blank load can fire it late.
        probe = "location.href + ' ' + document.readyState"
        while True:
            try:
                state = await self.call("Runtime.evaluate", expression=probe, returnByValue=True)
            except RuntimeError:  # the context went away mid-navigation: ask the new one
                state = {"result": {}}
            if state["result"].get("value") == f"{uri} complete":
                return
            await asyncio.sleep(0.05)

    async def load(self, uri: str, width: int, mobile: bool) -> tuple[Visit, bytes]:
        for domain in ("Page", "Network", "Runtime", "Log"):
            await self.call(f"{domain}.enable")
        metrics = {"width": width, "deviceScaleFactor": 1, "mobile": mobile}
        await self.call("Emulation.setDeviceMetricsOverride", height=900, **metrics)
        await self.call("Page.navigate", url=uri)
        await self.wait_until_loaded(uri)
        read = await self.call("Runtime.evaluate", expression=_READ_PAGE, returnByValue=True)
        state = json.loads(read["result"]["value"])
        layout = await self.call("Page.getLayoutMetrics")
        height = math.ceil(layout["cssContentSize"]["height"])
        await self.call("Emulation.setDeviceMetricsOverride", height=height, **metrics)
        shot = await self.call("Page.captureScreenshot", format="png")
        await self.call("Runtime.evaluate", expression="0")  # drain events queued by now
        visit = Visit(
            dom=state["dom"],
            figures=[tuple(item) for item in state["figures"]],
            charts=state["charts"],
            requests=[
                e["params"]["request"]["url"]
                for e in self.events
                if e["method"] == "Network.requestWillBeSent"
            ],
            console_errors=_console_errors(self.events),
            scroll_width=state["scrollWidth"],
            viewport_width=state["viewport"],
        )
        return visit, base64.b64decode(shot["data"])


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Uncaught exceptions, console.error / warn calls and browser log errors, as text."""
    errors = []
    for event in events:
        params = event["params"]
        if event["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details["text"])
        elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in (
            "error",
            "warning",
        ):
            errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif event["method"] == "Log.entryAdded" and params["entry"]["level"] in (
            "error",
            "warning",
        ):
            errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
    return errors
