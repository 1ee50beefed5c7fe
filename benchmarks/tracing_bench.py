"""What OpenTelemetry tracing costs the model path (run by hand; ``--quick`` for short runs).

Three ``redline serve`` processes, cache off so every input goes through the model, each
driven in turn by the same load (concurrent keep-alive clients, one distinct sentence per
request), in alternating rounds within one run:

* ``before``: the code before tracing existed (``--old-ref``, default the merge base with
  ``main``), from a ``git archive`` copy;
* ``off``: this tree, no ``OTEL_*`` variables (tracing off);
* ``on``: this tree exporting every span (``OTEL_TRACES_SAMPLER=always_on``) over OTLP/HTTP to
  a local receiver process that decodes and counts them (``--trace-before``: ``before`` too,
  to see what a change to the tracing itself costs when on).

Per model (``--models minilm,hashing``: the real model, and the instant HashingModel, where
the server's own overhead is all there is), prints requests/s per round and the medians of the
paired per-round ratios on/off (target >= 0.90) and off/before (target: ~1.00), and writes
``benchmarks/results/tracing_bench.json``. The box is shared: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from redline._ports import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "tracing_bench.json"
MODELS = {"minilm": "minilm", "hashing": "redline.serve.testing:create_hashing_model"}
WORDS = [
    "cache",
    "model",
    "server",
    "batch",
    "latency",
    "vector",
    "token",
    "queue",
    "request",
    "client",
    "embedding",
]

RECEIVER = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
count = [0]
bodies = []
lock = threading.Lock()
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            bodies.append(body)  # decoded when asked: a collector's CPU is not the server's
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        with lock:
            pending = bodies[:]
            bodies.clear()
        for raw in pending:
            request = ExportTraceServiceRequest()
            request.ParseFromString(raw)
            count[0] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        body = str(count[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def old_tree(ref: str, into: Path) -> Path:
    """The source of *ref* (``git archive``), returned as its ``src`` folder."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200")


def start_server(
    source: Path, model: str, env: dict[str, str], workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment = {**clean, "PYTHONPATH": str(source), "REDLINE_DATA_DIR": str(workdir), **env}
    command = [sys.executable, "-m", "redline", "serve", "--port", str(port), "--model", model]
    command += ["--cache-url", "none", "--log-level", "warning"]
    log = (workdir / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(command, env=environment, stdout=log, stderr=log, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ready", 300, proc)
    return proc, url


async def load(url: str, seconds: float, concurrency: int, seed: int) -> dict[str, float]:
    """Requests/s of *concurrency* keep-alive clients posting distinct sentences."""
    rng = random.Random(seed)
    done = errors = 0
    counter = 0
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done, errors, counter
        while time.perf_counter() < stop:
            counter += 1
            text = f"{seed}-{counter} " + " ".join(rng.choice(WORDS) for _ in range(12))
            async with session.post(f"{url}/v1/embeddings", json={"input": text}) as answer:
                await answer.read()
                if answer.status == 200:
                    done += 1
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"rps": done / elapsed, "errors": errors}


def spans_received(receiver_url: str) -> int:
    with urllib.request.urlopen(receiver_url, timeout=5) as answer:
        return int(answer.read())


def bench_model(
    name: str, sources: dict[str, Path], receiver_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "redline-bench",
    }
    envs = {"before": traced if args.trace_before else {}, "off": {}, "on": traced}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    rounds: list[dict[str, float]] = []
    cpu_ms: list[dict[str, float]] = []  # server CPU (all threads) per request: less noisy
    with tempfile.TemporaryDirectory(prefix="tracing-bench-") as tmp:
        try:
            for variant, env in envs.items():
                workdir = Path(tmp) / variant
                workdir.mkdir()
                source = sources["before" if variant == "before" else "now"]
                servers[variant] = start_server(source, MODELS[name], env, workdir)
            for variant in envs:  # warm-up, not counted
                asyncio.run(load(servers[variant][1], 1.0, args.concurrency, 0))
            spans_before = spans_received(receiver_url)
            order = list(envs)
            for index in range(args.rounds):
                results: dict[str, float] = {}
                cpu: dict[str, float] = {}
                for variant in order[index % 3 :] + order[: index % 3]:  # rotate who goes first
                    process = psutil.Process(servers[variant][0].pid)
                    before = sum(process.cpu_times()[:2])
                    result = asyncio.run(
                        load(servers[variant][1], args.seconds, args.concurrency, index + 1)
                    )
                    used = sum(process.cpu_times()[:2]) - before
                    results[variant] = result["rps"]
                    cpu[variant] = 1000 * used / max(1.0, result["rps"] * args.seconds)
                    if result["errors"]:
                        print(f"  {variant}: {result['errors']:.0f} errors", file=sys.stderr)
                rounds.append(results)
                cpu_ms.append(cpu)
                print(
                    f"{name} round {index + 1}: "
                    + "  ".join(f"{v} {results[v]:7.1f} req/s {cpu[v]:6.2f} ms" for v in envs),
                    flush=True,
                )
            time.sleep(1.0)  # the last spans leave within OTEL_BSP_SCHEDULE_DELAY
            exported = spans_received(receiver_url) - spans_before
        finally:
            for proc, _ in servers.values():
                proc.terminate()
            for proc, _ in servers.values():
                proc.wait(30)
    on_off = [r["on"] / r["off"] for r in rounds]
    off_before = [r["off"] / r["before"] for r in rounds]
    traced_variants = ["on", "before"] if args.trace_before else ["on"]
    traced_requests = sum(r[v] for r in rounds for v in traced_variants) * args.seconds
    return {
        "model": name,
        "rounds": rounds,
        "median_rps": {v: statistics.median(r[v] for r in rounds) for v in envs},
        "cpu_ms_per_request": {v: statistics.median(c[v] for c in cpu_ms) for v in envs},
        "cpu_rounds": cpu_ms,
        "on_over_off": {"median": statistics.median(on_off), "each": on_off, "target": 0.90},
        "off_over_before": {"median": statistics.median(off_before), "each": off_before},
        "spans_exported_per_traced_request": exported / traced_requests if traced_requests else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,hashing")
    parser.add_argument("--seconds", type=float, default=8.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--old-ref", default=None, help="default: git merge-base HEAD main")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 s")
    parser.add_argument(
        "--trace-before",
        action="store_true",
        help="trace the old ref too (always_on): what a change to tracing costs when on",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3.0, 3
    ref = (
        args.old_ref
        or subprocess.run(
            ["git", "-C", str(REPO), "merge-base", "HEAD", "main"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracing-old-") as old:
        sources = {"before": old_tree(ref, Path(old)), "now": REPO / "src"}
        port = free_port()
        receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
        receiver_url = f"http://127.0.0.1:{port}"
        try:
            wait_http(receiver_url, 30, receiver)
            for name in args.models.split(","):
                results.append(bench_model(name, sources, receiver_url, args))
        finally:
            receiver.terminate()
            receiver.wait(10)
    print()
    print(
        f"{'model':8} {'before':>9} {'off':>9} {'on':>9} {'on/off':>7} {'off/before':>10}"
        f" {'CPU ms/req before / off / on':>29} spans/req"
    )
    for row in results:
        rps, cpu = row["median_rps"], row["cpu_ms_per_request"]
        print(
            f"{row['model']:8} {rps['before']:9.1f} {rps['off']:9.1f} {rps['on']:9.1f} "
            f"{row['on_over_off']['median']:7.3f} {row['off_over_before']['median']:10.3f} "
            f"{cpu['before']:13.2f} / {cpu['off']:5.2f} / {cpu['on']:5.2f} "
            f"{row['spans_exported_per_traced_request']:9.2f}"
        )
    print(
        "req/s and server CPU ms per request: medians over rounds; ratios: medians of the "
        "per-round ratios (shared, noisy box)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "old_ref": ref,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "before_traced": args.trace_before,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
