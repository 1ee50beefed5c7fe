"""The live status page of a real ``redline cluster`` (``--status-port``), in headless Chromium:
replicas, their checks and share of traffic; a killed replica turns red within the check
interval, then comes back with one more restart. The cluster runs with API keys and
``REDLINE_METRICS_AUTH=true``: the page asks for the key, and the supervisor scrapes the
replicas' ``/metrics`` with it (the share of traffic needs their counters).

Screenshots (desktop 1200 px with the replica down, phone 400 px) are kept in the test's tmp
dir (``pytest --basetemp`` to choose where).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests._services import free_port, wait_for_port
from tests.bench._chromium import Browser
from tests.lb.conftest import load, subprocess_env

pytestmark = pytest.mark.slow

HASHING = "redline.serve.testing:create_hashing_model"
KEY = "k-cluster"
DASH = "\u2013"  # what the page shows for "no figure"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECK_INTERVAL = 0.5
REFRESH = 0.25
ROWS = """JSON.stringify([...document.querySelectorAll('tr[data-replica]')].map(
  tr => [tr.dataset.replica, tr.dataset.state, tr.querySelector('.state').textContent,
         [...tr.cells].map(td => td.textContent)]))"""
# Every state each replica row showed, as the page redrew it (a poll can be shorter than a
# state lasts, but no poll is missed).
WATCH = """window.seen = [];
new MutationObserver(() => {
  for (const tr of document.querySelectorAll('tr[data-replica]')) {
    window.seen.push([tr.dataset.replica, tr.dataset.state, performance.now(),
      getComputedStyle(tr.querySelector('.state')).color, tr.cells[4].textContent]);
  }
}).observe(document.getElementById('figures'), {childList: true}); true"""


@pytest.fixture
def cluster(nginx_binary: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """``redline cluster`` with two hashing replicas; (nginx URL, status URL, run dir)."""
    run_dir, port, status_port = tmp_path / "run", free_port(), free_port()
    command = [sys.executable, "-m", "redline", "cluster", "--replicas", "2"]
    command += ["--listen", f"127.0.0.1:{port}", "--model", HASHING, "--cache-url", "none"]
    command += ["--run-dir", str(run_dir), "--check-interval", str(CHECK_INTERVAL)]
    command += ["--rise", "1", "--nginx", nginx_binary, "--status-port", str(status_port)]
    log = (tmp_path / "cluster.log").open("wb")
    env = subprocess_env(REDLINE_API_KEYS=KEY, REDLINE_METRICS_AUTH="true")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        wait_for_port(status_port, timeout=90, proc=proc)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{status_port}", run_dir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait(10)
        log.close()


async def test_cluster_status_page_shows_replicas_and_a_killed_one_turns_red(
    browser: Browser, cluster: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, status_url, _ = cluster
    async with browser.live(f"{status_url}/status?refresh={REFRESH}", width=1200) as page:
        await page.wait_for("document.querySelector('#key.shown')", timeout=10)
        await page.evaluate(
            f"document.querySelector('#key input').value = '{KEY}';"
            "document.querySelector('#key button').click()"
        )
        await page.wait_for(
            "document.querySelectorAll('tr[data-replica][data-state=up]').length === 2",
            timeout=30,
        )
        result = await load(f"{url}/v1/embeddings", 60, concurrency=4, headers=lambda i: AUTH)
        assert result.failures == 0, result.errors
        # the supervisor scrapes each replica's counter every 2 s
        await page.wait_for(
            "[...document.querySelectorAll('tr[data-replica]')].every("
            "tr => Number(tr.cells[4].textContent) > 0)",
            timeout=15,
        )
        rows = json.loads(await page.evaluate(ROWS))
        served = [int(cells[4]) for _, _, _, cells in rows]
        assert sum(served) >= 60  # nginx split the load between both replicas
        shares = [float(cells[6].split()[0]) for _, _, _, cells in rows]
        assert sum(shares) == pytest.approx(100, abs=0.5)
        assert all(cells[2].startswith("ok") for _, _, _, cells in rows)

        async with httpx.AsyncClient(trust_env=False) as client:
            document = (await client.get(f"{status_url}/status.json", headers=AUTH)).json()
        victim = document["replicas"][1]
        assert victim["restarts"] == 0
        await page.evaluate(WATCH)
        killed_at = await page.evaluate("performance.now()")
        started = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        down = await page.wait_for(
            "(window.seen.find(s => s[0] === '1' && s[1] === 'down') || null)", timeout=10
        )
        # the next check sees it; the page shows it at its next poll
        assert (down[2] - killed_at) / 1000 <= CHECK_INTERVAL + REFRESH + 1.0, down
        assert down[3] == "rgb(207, 34, 46)"  # red
        if await page.evaluate("document.querySelector('tr[data-replica=\"1\"].down') !== null"):
            (tmp_path / "cluster-down-desktop.png").write_bytes(await page.screenshot())
        up_again = await page.wait_for(
            f"(window.seen.find(s => s[0] === '1' && s[1] === 'up' && s[2] > {down[2]}) || null)",
            timeout=30,
        )
        assert up_again[3] != down[3]
        rows = json.loads(await page.evaluate(ROWS))
        assert rows[1][3][3] == "1"  # one restart
        # from its death on, the replica never shows the dead process's count as its own
        after = await page.evaluate(f"window.seen.filter(s => s[0] === '1' && s[2] >= {down[2]})")
        assert {entry[4] for entry in after} <= {"0", DASH}, after
        assert time.monotonic() - started < 40
        # the one error: the browser's note of the first poll's 401, before the key was given
        assert [e for e in page.console_errors if "401" not in e] == []
        assert all(r.startswith(status_url + "/") for r in page.requests), page.requests
    async with browser.live(f"{status_url}/status", width=400, mobile=True) as phone:
        await phone.wait_for("document.querySelector('#key.shown')", timeout=10)  # a new tab
        await phone.evaluate(
            f"document.querySelector('#key input').value = '{KEY}';"
            "document.querySelector('#key button').click()"
        )
        await phone.wait_for("document.body.dataset.polls", timeout=10)
        (tmp_path / "cluster-phone.png").write_bytes(await phone.screenshot())
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 400
        assert [e for e in phone.console_errors if "401" not in e] == []


async def test_cluster_status_json_needs_a_key_when_metrics_auth_is_on(
    nginx_binary: str, tmp_path: Path
) -> None:
    from redline.lb import ClusterOptions, ClusterSupervisor, HealthCheck
    from redline.lb.status_server import ClusterStatusServer
    from tests.lb.conftest import standin_command

    options = ClusterOptions(
        replicas=1,
        listen=f"127.0.0.1:{free_port()}",
        run_dir=tmp_path / "run",
        health=HealthCheck(interval=0.5),
    )
    async with (
        ClusterSupervisor(options, command=standin_command, nginx_binary=nginx_binary) as sup,
        ClusterStatusServer(sup, port=0, api_keys=("k-cluster",)) as server,
        httpx.AsyncClient(base_url=server.url.removesuffix("/status"), trust_env=False) as client,
    ):
        page = await client.get("/status")
        assert page.status_code == 200
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        refused = await client.get("/status.json")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        wrong = await client.get("/status.json", headers={"Authorization": "Bearer k-other"})
        assert wrong.status_code == 401
        good = await client.get("/status.json", headers={"Authorization": "Bearer k-cluster"})
        assert good.status_code == 200
        assert [r["state"] for r in good.json()["replicas"]] == ["up"]
        assert (await client.post("/status.json")).status_code == 405
        assert (await client.get("/nope")).status_code == 404
    await asyncio.sleep(0)


def test_replica_rates_count_within_one_process_only() -> None:
    from types import SimpleNamespace

    from redline.lb.status_server import _Window

    now = [0.0]
    window = _Window(10.0, timer=lambda: now[0])
    replica = SimpleNamespace(index=0, pid=100, requests_served=50)
    assert window.rates([replica]) == (0.0, {0: None})  # type: ignore[list-item]
    now[0], replica.requests_served = 2.0, 70
    assert window.rates([replica])[1] == {0: 10.0}  # type: ignore[list-item]
    # restarted: a new pid, the old count still held until the next scrape, then zero
    now[0], replica.pid = 3.0, 101
    assert window.rates([replica])[1] == {0: 0.0}  # type: ignore[list-item]
    now[0], replica.requests_served = 4.0, 0
    assert window.rates([replica])[1] == {0: 0.0}  # type: ignore[list-item]
    now[0], replica.requests_served = 5.0, 20
    assert window.rates([replica])[1] == {0: 4.0}  # type: ignore[list-item]
    replica.pid = None  # not running: serves nothing
    now[0] = 6.0
    assert window.rates([replica])[1] == {0: 0.0}  # type: ignore[list-item]
