"""How many requests per second one ``redline bench`` generator process can produce.

Starts the cheapest possible HTTP server (an asyncio protocol that answers every request with
a fixed 2-byte response, in its own process) and loads it closed loop with 1 and 2 generator
processes. Prints a table and writes ``benchmarks/results/bench_cli_throughput.json``; the
generator's own CPU use tells whether the generator or the server was the limit.

    .venv/bin/python benchmarks/bench_cli_throughput.py [--duration 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import psutil

from redline._ports import free_port
from redline.bench import LoadConfig
from redline.bench.runner import BenchRun, bench
from redline.bench.workload import Workload

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Trivial(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # One response per complete request head (GETs without bodies).
        while b"\r\n\r\n" in self.buffer:
            _head, _sep, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def _serve(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Trivial, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _measure(url: str, processes: int, duration: float, concurrency: int) -> dict[str, Any]:
    run = BenchRun(
        config=LoadConfig(url=url, concurrency=concurrency, duration=duration, warmup=1.0),
        workload=Workload(route="custom", path="/"),
        processes=processes,
        scrape=False,
    )
    me = psutil.Process()
    cpu_before = me.cpu_times()
    children_before = sum(c.cpu_times().user + c.cpu_times().system for c in me.children())
    started = time.perf_counter()
    report = asyncio.run(bench(run))
    wall = time.perf_counter() - started
    cpu_after = me.cpu_times()
    own = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    children = (cpu_after.children_user + cpu_after.children_system) - children_before
    return {
        "processes": processes,
        "concurrency": concurrency,
        "throughput_rps": report["summary"]["throughput_rps"],
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
        "errors": report["summary"]["errors"],
        "generator_cpu_cores": (own + max(children, 0.0)) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}"
        rows = [_measure(url, n, args.duration, args.concurrency) for n in (1, 2)]
    finally:
        server.terminate()
        server.join(5)
    print(f"{'processes':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'gen CPU':>8} {'errors':>7}")
    for row in rows:
        print(
            f"{row['processes']:>9} {row['throughput_rps']:>9,.0f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['generator_cpu_cores']:>8.2f} {row['errors']:>7}"
        )
    out = Path(__file__).parent / "results" / "bench_cli_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpu_count": psutil.cpu_count(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
