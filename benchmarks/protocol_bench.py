"""What the HTTP protocol guard costs per request: CPU time, alone and in a server under wrk.

The protocol layer alone, in this process (uvloop): one keep-alive connection on a fake
transport, a request fed, the loop run until the answer of a trivial ASGI app is written;
process CPU time per request. Then the whole server: ``redline serve``'s app (HashingModel,
memory cache) under ``wrk`` posting one input that is cached after the first request, so the
HTTP path is much of the work. Both compare, in alternating rounds:

- ``bare``: uvicorn's own protocol (``http="httptools"``): no deadlines, no coalescing;
- ``guarded``: :func:`redline.serve.protocol.guarded_http_protocol`, as ``redline serve``
  runs it;
- ``before``: with ``--before SRC``, another checkout's ``src`` (its protocol factory,
  whatever it was) — to compare a change with what it replaces.

Per server: requests/s, and the server process's CPU time (user + system) over the measured
window divided by the requests it answered, in microseconds. Prints two tables, writes
``benchmarks/results/protocol_bench.json``. Example::

    git archive main src | tar -x -C /tmp/before
    python benchmarks/protocol_bench.py --before /tmp/before/src --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import uvloop
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.server import ServerState

from redline._ports import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "protocol_bench.json"
HASHING = "redline.serve.testing:create_hashing_model"

RUNNER = """
import sys, uvicorn
port, which = int(sys.argv[1]), sys.argv[2]
if which == "bare":
    http = "httptools"
else:
    import redline.serve.protocol as p
    factory = getattr(p, "guarded_http_protocol", None) or getattr(p, "coalescing_http_protocol")
    http = factory(10.0, 30.0)
uvicorn.run("redline.serve.app:create_app_from_env", factory=True, host="127.0.0.1",
            port=port, log_level="warning", access_log=False, log_config=None, http=http)
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"input": "the same sentence, cached after its first request"}'
wrk.headers["Content-Type"] = "application/json"
"""


REQUEST = (
    b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Content-Length: 60\r\nUser-Agent: wrk\r\n\r\n" + b"x" * 60
)


class _CountingTransport(asyncio.Transport):
    """A transport that counts writes and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return addresses.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _trivial_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol_factories(before: Path | None) -> dict[str, Callable[[], asyncio.Protocol]]:
    from redline.serve.protocol import guarded_http_protocol

    config = uvicorn.Config(_trivial_app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    builders: dict[str, Callable[..., asyncio.Protocol]] = {
        "bare": import_from_string(HTTP_PROTOCOLS["httptools"]),
        "guarded": guarded_http_protocol(),
    }
    if before is not None:  # that checkout's protocol module, under a name of its own
        path = before / "redline" / "serve" / "protocol.py"
        spec = importlib.util.spec_from_file_location("protocol_before", path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"no protocol module at {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        factory = getattr(module, "guarded_http_protocol", None)
        builders["before"] = (factory or module.coalescing_http_protocol)()
    return {
        name: (lambda build=build: build(config=config, server_state=state, app_state={}))
        for name, build in builders.items()
    }


async def _protocol_cpu_us(make: Callable[[], asyncio.Protocol], requests: int) -> float:
    transport = _CountingTransport()
    protocol = make()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        written = transport.writes
        protocol.data_received(REQUEST)
        while transport.writes == written:
            await asyncio.sleep(0)
    used = time.process_time() - started
    protocol.connection_lost(None)
    return used / requests * 1e6


def protocol_alone(before: Path | None, rounds: int) -> dict[str, list[float]]:
    """CPU microseconds per request of each protocol alone, *rounds* alternating runs."""
    factories = _protocol_factories(before)

    async def alternate() -> dict[str, list[float]]:
        runs: dict[str, list[float]] = {name: [] for name in factories}
        for _ in range(rounds):
            for name, make in factories.items():
                runs[name].append(await _protocol_cpu_us(make, 20_000))
        return runs

    return uvloop.run(alternate())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout's src directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, source: Path, args: argparse.Namespace, lua: Path) -> dict[str, float]:
    """Start one server, warm it, run wrk for the window; its rate and CPU per request."""
    port = free_port()
    which = "bare" if name == "bare" else "guarded"
    with tempfile.TemporaryDirectory(prefix="protocol-bench-") as data:
        env = {
            **os.environ,
            "PYTHONPATH": str(source),
            "REDLINE_MODEL": HASHING,
            "REDLINE_DATA_DIR": data,
            "REDLINE_LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(port), which],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{name} server did not start")
                time.sleep(0.2)
            wrk = ["wrk", "-t1", f"-c{args.connections}", "-s", str(lua)]
            subprocess.run([*wrk, "-d2s", url + "/v1/embeddings"], capture_output=True, check=True)
            before = cpu_seconds(proc.pid)
            out = subprocess.run(
                [*wrk, f"-d{args.seconds:g}s", url + "/v1/embeddings"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            used = cpu_seconds(proc.pid) - before
        finally:
            proc.terminate()
            proc.wait(30)
    found = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if found is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk against {name}: {out}")
    requests, window = int(found.group(1)), float(found.group(2))
    return {"rate": requests / window, "cpu_us": used / requests * 1e6}


def main() -> None:
    args = parse_args()
    alone = protocol_alone(args.before, max(args.rounds, 9))
    print(f"protocol alone, CPU us/request (median of {len(alone['bare'])} runs)")
    bare_alone = statistics.median(alone["bare"])
    for name, values in alone.items():
        median = statistics.median(values)
        print(f"  {name:<10}{median:>8.1f}{median / bare_alone:>9.3f}x")
    servers = {"bare": REPO / "src", "guarded": REPO / "src"}
    if args.before is not None:
        servers["before"] = args.before.resolve()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(WRK_SCRIPT)
        lua.flush()
        for _ in range(args.rounds):
            for name, source in servers.items():  # alternating: drift hits every server
                runs[name].append(measure(name, source, args, Path(lua.name)))
    load = os.getloadavg()
    print(f"{args.rounds} rounds x {args.seconds:g}s, wrk -c{args.connections}; load {load}")
    print(f"{'server':<10}{'req/s':>10}{'CPU us/req':>12}{'vs bare':>10}")
    table = {}
    bare_cpu = statistics.median(r["cpu_us"] for r in runs["bare"])
    for name, results in runs.items():
        rate = statistics.median(r["rate"] for r in results)
        cpu = statistics.median(r["cpu_us"] for r in results)
        table[name] = {"rate": rate, "cpu_us": cpu, "runs": results}
        print(f"{name:<10}{rate:>10.0f}{cpu:>12.1f}{cpu / bare_cpu:>9.3f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"load": load, "protocol_alone_cpu_us": alone, "servers": table}
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
