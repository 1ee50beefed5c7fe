"""Benchmark of the gateway (``redline serve --upstream``): what it gives and what it costs.

Three ``redline serve`` processes on loopback ports, started here and stopped at the end:

* ``upstream``: the model behind the gateway, with no cache (as TEI or OpenAI are); the real
  all-MiniLM-L6-v2 by default (``--upstream-model hashing`` for the HashingModel);
* ``gateway``: ``--upstream up=UPSTREAM``, a memory cache;
* ``local``: redline's own cached path (HashingModel, memory cache) for the hit comparisons.

Side by side, closed loops of keep-alive clients after a warm-up, rounds alternating:

* ``90% repeated``: upstream alone vs gateway in front of it (target: gateway >= 10x);
* ``100% hits``: gateway vs redline's own cached path (target: >= 0.85x);
* ``all distinct``: single-input clients, upstream alone vs gateway + upstream (target:
  >= 0.9x on a 2-core box, where the gateway's CPU is taken from the upstream's);
* ``hit p50 added``: one client, gateway hit p50 minus redline's own hit p50 (target <= 1 ms).

Prints a table (medians over rounds) and the gateway's own counters over the whole run
(``/metrics``: mean inputs per upstream call, inputs from the cache / coalesced / sent), and
writes ``benchmarks/results/gateway_bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from redline._services.serve import HASHING, Serve
from redline.bench.config import LoadConfig
from redline.bench.loadgen import run_load
from redline.bench.workload import Workload

REPO = Path(__file__).resolve().parents[1]

DEFAULT_JSON = REPO / "benchmarks" / "results" / "gateway_bench.json"
QUIET = {"REDLINE_LOG_LEVEL": "warning", "PYTHONPATH": str(REPO / "src")}


async def load(
    url: str, *, concurrency: int, duration: float, repeat: float, model: str | None, seed: int
) -> dict[str, Any]:
    config = LoadConfig(url=url, concurrency=concurrency, duration=duration, warmup=1.0)
    workload = Workload(repeat=repeat, model=model, hot_set_size=16)
    result = await run_load(config, workload, seed=seed)
    summary = result.histogram.summary()
    return {
        "rps": result.throughput,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "ok": result.ok,
        "errors": sum(result.errors.values()),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    upstream_args = ["--cache-url", "none"]
    if args.upstream_model == "hashing":
        upstream_args += ["--model", HASHING]
        model_name = "hashing"
    else:
        model_name = "all-MiniLM-L6-v2"
    upstream = Serve(*upstream_args, env=QUIET).start(ready_timeout=300)
    gateway = Serve(
        "--model",
        HASHING,
        "--upstream",
        f"up={upstream.url}?max_inputs={args.max_inputs}&concurrency={args.upstream_concurrency}",
        env={**QUIET, "REDLINE_HASHING_NAME": "local"},
    ).start()
    local = Serve("--model", HASHING, env=QUIET).start()
    runs: dict[str, list[dict[str, Any]]] = {}

    async def measure(name: str, url: str, **kw: Any) -> None:
        # The upstream may still be finishing what the last run left queued: let it settle.
        await asyncio.sleep(args.settle)
        runs.setdefault(name, []).append(await load(url, duration=args.duration, **kw))

    try:
        # First requests pay for lazy imports and connection set-up: keep them out.
        for url, model in ((upstream.url, None), (gateway.url, model_name), (local.url, None)):
            await load(url, concurrency=4, duration=1.0, repeat=0.5, model=model, seed=1)
        for index in range(args.rounds):
            seed = 100 + index
            hot = {"concurrency": args.concurrency, "repeat": 0.9, "seed": seed}
            pairs = [
                ("repeat90 upstream", upstream.url, {**hot, "model": None}),
                ("repeat90 gateway", gateway.url, {**hot, "model": model_name}),
            ]
            hits = {"concurrency": args.concurrency, "repeat": 1.0, "seed": seed}
            pairs += [
                ("hits gateway", gateway.url, {**hits, "model": model_name}),
                ("hits local", local.url, {**hits, "model": None}),
            ]
            fresh = {"concurrency": args.concurrency, "repeat": 0.0, "seed": seed}
            pairs += [
                ("distinct upstream", upstream.url, {**fresh, "model": None}),
                ("distinct gateway", gateway.url, {**fresh, "model": model_name}),
            ]
            one = {"concurrency": 1, "repeat": 1.0, "seed": seed}
            pairs += [
                ("hit c=1 gateway", gateway.url, {**one, "model": model_name}),
                ("hit c=1 local", local.url, {**one, "model": None}),
            ]
            if index % 2:
                pairs = [p for pair in zip(pairs[1::2], pairs[::2], strict=True) for p in pair]
            for name, url, kw in pairs:
                await measure(name, url, **kw)
        gateway_metrics = scrape_gateway(gateway.url)
    finally:
        for server in (gateway, local, upstream):
            server.close()
    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in ("rps", "p50_ms", "p99_ms")}
        | {"errors": sum(r["errors"] for r in rows)}
        for name, rows in runs.items()
    }

    def ratio(a: str, b: str) -> float:
        return round(medians[a]["rps"] / medians[b]["rps"], 3)

    figures = {
        "repeat90_gateway_over_upstream": ratio("repeat90 gateway", "repeat90 upstream"),
        "hits_gateway_over_local": ratio("hits gateway", "hits local"),
        "distinct_gateway_over_upstream": ratio("distinct gateway", "distinct upstream"),
        "hit_p50_added_ms": round(
            medians["hit c=1 gateway"]["p50_ms"] - medians["hit c=1 local"]["p50_ms"], 3
        ),
    }
    targets = {
        "repeat90_gateway_over_upstream": ">= 10",
        "hits_gateway_over_local": ">= 0.85",
        "distinct_gateway_over_upstream": ">= 0.9",
        "hit_p50_added_ms": "<= 1.0",
    }
    return {
        "medians": medians,
        "figures": figures,
        "targets": targets,
        "gateway_metrics": gateway_metrics,
        "runs": runs,
        "settings": {
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "upstream_model": args.upstream_model,
            "max_inputs": args.max_inputs,
            "upstream_concurrency": args.upstream_concurrency,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
        },
    }


def scrape_gateway(url: str) -> dict[str, float]:
    """What the gateway's ``/metrics`` say about the whole run: upstream calls, mean inputs
    per call, and the inputs served from the cache, coalesced or sent upstream."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "redline_gateway_inputs_total":
                key = f"inputs_{sample.labels['source']}"
            elif sample.name in (
                "redline_upstream_batch_size_sum",
                "redline_upstream_batch_size_count",
            ):
                key = sample.name.removeprefix("redline_upstream_")
            else:
                continue
            totals[key] = totals.get(key, 0.0) + sample.value
    calls = totals.get("batch_size_count", 0.0)
    totals["mean_inputs_per_upstream_call"] = (
        round(totals.get("batch_size_sum", 0.0) / calls, 2) if calls else 0.0
    )
    return totals


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gateway: median over rounds")
    for column in ("run", "req/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right")
    for name, row in result["medians"].items():
        table.add_row(
            name,
            f"{row['rps']:.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            str(row["errors"]),
        )
    console = Console(width=110)
    console.print(table)
    figures = Table(title="figures vs targets")
    for column in ("figure", "measured", "target"):
        figures.add_column(column, justify="right")
    for name, value in result["figures"].items():
        figures.add_row(name, str(value), result["targets"][name])
    console.print(figures)
    console.print(f"gateway /metrics over the run: {result['gateway_metrics']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds between runs")
    parser.add_argument("--max-inputs", type=int, default=32, help="gateway batch per call")
    parser.add_argument(
        "--upstream-concurrency", type=int, default=8, help="gateway calls in flight upstream"
    )
    parser.add_argument("--upstream-model", choices=("minilm", "hashing"), default="minilm")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3.0
    result = asyncio.run(run(args))
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
