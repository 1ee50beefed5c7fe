"""The cache-hit row of ``serve_bench`` on its own, quick enough to run while changing the hit
path: ``redline serve`` at 100% cache hits against the bare uvicorn + Starlette endpoint that
answers a constant body of the same size, in alternating rounds, and a lone client.

``--compare SRC`` (a ``src`` folder of another checkout, e.g. ``git archive main src``) starts a
second redline from that code, so that "before" and "after" are measured in the same run on
the same (shared, noisy) box. Beside each rate: the server's CPU-seconds per 1,000 requests
(from ``/proc/PID/stat``), steadier than the rate when other work shares the cores.

``--lone`` also runs a lone client (distinct inputs, one connection) against the runtime's
in-process batch-1 latency, and against the bare endpoint made to keep a thread busy for that
batch-1 p50 before answering: its p50 minus the busy time (``floor_ms``) is what HTTP and one
thread round trip cost a lone request after the loop idled that long, with no model and no
redline code; ``gap_above_floor_ms`` is the part of redline's gap that is its own.

Example::

    python benchmarks/hit_bench.py --rounds 3 --seconds 8 --compare /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from redline._ports import free_port
from servebench.sentences import load_sentences
from servebench.servers import OFFLINE, Server, bare_server, post_json
from servebench.wrk import SentenceFile, run_wrk

REPO = Path(__file__).resolve().parents[1]
MODEL = "all-MiniLM-L6-v2"
HOT_INPUTS = 50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--compare", type=Path, help="src folder of the code to compare with")
    parser.add_argument(
        "--lone",
        action="store_true",
        help="also a lone client (distinct inputs) against the runtime's batch-1 latency",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args()


def redline_from(src: Path, name: str, data_dir: Path, runtime: str) -> Server:
    """``redline serve`` on its defaults, importing redline from *src*."""
    port = free_port()
    command = [sys.executable, "-m", "redline", "serve", "--port", str(port)]
    command += ["--log-level", "warning", "--data-dir", str(data_dir), "--model-runtime", runtime]
    env = {**OFFLINE, "PYTHONPATH": str(src)}
    return Server(
        name, command, port, ready_path="/ready", embeddings_path="/v1/embeddings", env=env
    )


def measure(server: Server, texts: SentenceFile, args: argparse.Namespace, **kw: Any) -> dict:
    connections = kw.get("connections", args.connections)
    mode = kw.get("mode", "repeat")
    if args.warmup > 0:
        run_wrk(server.embeddings_url, texts, seconds=args.warmup, connections=connections,
                model=MODEL, mode=mode)  # fmt: skip
    cpu = server.cpu_seconds()
    result = run_wrk(server.embeddings_url, texts, seconds=args.seconds, connections=connections,
                     model=MODEL, mode=mode)  # fmt: skip
    cpu = server.cpu_seconds() - cpu
    return {
        "rate": round(result.rate, 1),
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "errors": result.error_count,
        "cpu_s_per_1k": round(1000 * cpu / max(result.ok, 1), 3),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="hit-bench-"))
    hot = SentenceFile.write(work / "hot.jsonl", load_sentences(HOT_INPUTS, seed=2))
    load = SentenceFile.write(work / "load.jsonl", load_sentences(20_000, seed=1))
    servers: dict[str, Server] = {}
    try:
        servers["redline"] = redline_from(REPO / "src", "redline", work / "a", args.runtime)
        if args.compare is not None:
            servers["before"] = redline_from(args.compare, "before", work / "b", args.runtime)
        for server in servers.values():
            server.wait_ready()
        body = b""
        for line in hot.path.read_text().splitlines():
            for server in servers.values():
                body = post_json(server.embeddings_url, {"input": json.loads(line), "model": MODEL})
        (work / "body.json").write_bytes(body)
        servers["bare"] = bare_server(work / "body.json")
        servers["bare"].wait_ready()
        names = list(servers)
        rounds: dict[str, list[dict]] = {name: [] for name in names}
        for turn in range(args.rounds):
            start = turn % len(names)
            for name in names[start:] + names[:start]:
                rounds[name].append(measure(servers[name], hot, args))
                print(name, rounds[name][-1], flush=True)
        lone: dict[str, list[dict]] = {}
        busy_ms = 0.0
        if args.lone:
            from servebench.inprocess import RuntimeBench, load_encoder

            runtime = RuntimeBench(load_encoder(), args.runtime, load_sentences(5000, seed=3))
            for _ in range(args.rounds):
                p50, p99 = runtime.batch1_latency_ms(args.seconds)
                lone.setdefault("batch1", []).append({"p50_ms": p50, "p99_ms": p99})
                print("batch-1 in-process", lone["batch1"][-1], flush=True)
                if "floor" not in servers:
                    # The bare endpoint again, its loop idle for the first batch-1 p50 while
                    # a thread spins: the lone client's HTTP + thread round trip after idle.
                    busy_ms = round(p50, 3)
                    servers["floor"] = bare_server(work / "body.json", busy=busy_ms / 1000)
                    servers["floor"].wait_ready()
                for name in [n for n in servers if n != "bare"]:
                    figures = measure(servers[name], load, args, connections=1, mode="distinct")
                    lone.setdefault(name, []).append(figures)
                    print("lone", name, figures, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    summary = {}
    for name, runs in rounds.items():
        summary[name] = {
            key: statistics.median(run[key] for run in runs)
            for key in ("rate", "cpu_s_per_1k", "p50_ms", "load")
        }
    for name in names:
        if name != "bare":
            per_round = [
                round(run["rate"] / bare["rate"], 3)
                for run, bare in zip(rounds[name], rounds["bare"], strict=True)
            ]
            summary[name]["ratio_rounds"] = per_round
            summary[name]["ratio"] = round(summary[name]["rate"] / summary["bare"]["rate"], 3)
            summary[name]["cpu_ratio"] = round(
                summary["bare"]["cpu_s_per_1k"] / summary[name]["cpu_s_per_1k"], 3
            )
    for name, runs in lone.items():
        summary.setdefault(name, {})["lone_p50_ms"] = statistics.median(r["p50_ms"] for r in runs)
    if "batch1" in lone:
        for name in lone:
            summary[name]["lone_minus_batch1_ms"] = round(
                summary[name]["lone_p50_ms"] - summary["batch1"]["lone_p50_ms"], 3
            )
    if "floor" in lone:
        # What HTTP and one thread round trip cost a lone request after the loop idled for
        # busy_ms (no model, no redline code); the rest of a server's gap is its own.
        floor = round(summary["floor"]["lone_p50_ms"] - busy_ms, 3)
        summary["floor"] = {"busy_ms": busy_ms, "floor_ms": floor, **summary["floor"]}
        for name in lone:
            if name not in ("batch1", "floor"):
                gap = summary[name]["lone_minus_batch1_ms"]
                summary[name]["gap_above_floor_ms"] = round(gap - floor, 3)
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds, "lone": lone}))


if __name__ == "__main__":
    main()
