"""Benchmark of the built-in model's runtimes: quality, in-process speed, start time and memory.

    python benchmarks/runtime_bench.py [--quick] [--sentences 5000] [--json PATH]

For ``onnx`` (fp32), ``onnx-int8`` (smoothed block-wise int8, the opt-in runtime) and ``torch``
(the package as it ships), plus for comparison other block-wise graphs (block 32 and 64 without
smoothing, block 128 with it) and two graphs made by onnxruntime's ``quantize_dynamic`` (one
scale per activation tensor; weights per tensor or per channel). The int8 recipe's calibration
sentences are left out of the sentences that judge the vectors:

1. quality against the fp32 vectors (all sentences for int8, a subset for the comparisons)
   on real English sentences that ship with Python (pydoc's
   help topics and the standard library's docstrings, split and deduplicated): mean / min
   cosine and nearest-neighbour recall@10 (how many of each sentence's 10 nearest neighbours
   under fp32 the runtime keeps);
2. in-process throughput of one runner on one thread (passes of 16, as the server runs them)
   at batches of 1, 32 and 64, in alternating rounds so every runtime sees the same share of
   a noisy machine; both sentences per wall second and per CPU second (the latter barely
   moves when other processes take the cores);
3. start: a fresh process loading the model (cold: an empty graph cache, so it exports; cached:
   the graph found on disk), and ``redline serve`` from spawn to ``/ready`` = 200 with a cached
   graph; wall seconds, CPU seconds, resident memory, and whether torch was imported.

Prints tables and writes ``benchmarks/results/runtime_bench.json`` with the ratios the project
targets: int8 recall@10 >= 0.97, mean cosine >= 0.99, speed >= 1.25x fp32 at batch 32/64;
cached ready <= 3 s and <= 350 MB resident.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from redline._ports import free_port

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "runtime_bench.json"
RUNTIMES = ("onnx", "onnx-int8", "torch")

# A fresh interpreter loads the model and reports time, CPU, memory and heavy imports.
LOAD_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
started, cpu = time.perf_counter(), time.process_time()
from redline.serve.minilm import create_minilm_model
model = create_minilm_model(runtime=sys.argv[1], cache_dir=Path(sys.argv[2]))
model.warmup()
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
rss = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rss_mb": rss / 2**20,
                  "torch_imported": "torch" in sys.modules}))
"""


def english_sentences(limit: int) -> list[str]:
    """Distinct sentences of 5-60 words from pydoc's topics and the stdlib's docstrings."""
    from pydoc_data.topics import topics

    texts = list(topics.values())
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test"}
    for name in sorted(sys.stdlib_module_names):
        if name in skip or name.startswith("_"):
            continue
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except BaseException:  # some modules refuse to import here (no display, no C part)
                continue
            for member in [module, *vars(module).values()]:
                own = member is module or getattr(member, "__module__", None) == name
                doc = getattr(member, "__doc__", None) if own else None
                if isinstance(doc, str):
                    texts.append(doc)
    seen: dict[str, None] = {}
    for text in texts:
        for paragraph in re.split(r"\n\s*\n", text):
            flat = " ".join(paragraph.split())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                letters = sum(c.isalpha() for c in sentence)
                if 5 <= len(sentence.split()) <= 60 and letters >= 0.6 * len(sentence):
                    seen.setdefault(sentence)
    sentences = list(seen)
    if len(sentences) < limit:
        raise SystemExit(f"only {len(sentences)} sentences found, asked for {limit}")
    return sentences[:limit]


def quality(reference: np.ndarray, vectors: np.ndarray) -> dict[str, float]:
    """Mean / min cosine to *reference* and recall@10 of its nearest neighbours."""
    cosines = np.sum(reference * vectors, axis=1)
    neighbours = []
    for matrix in (reference, vectors):
        similarity = matrix @ matrix.T
        np.fill_diagonal(similarity, -2.0)
        neighbours.append(np.argpartition(-similarity, 10, axis=1)[:, :10])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*neighbours, strict=True)])
    return {
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "recall_at_10": float(recall),
    }


def dynamic_graph(fp32: Path, folder: Path, per_channel: bool) -> Path:
    """onnxruntime's ``quantize_dynamic`` of every weight MatMul (QInt8), for comparison."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = folder / f"dynamic-{'channel' if per_channel else 'tensor'}.onnx"
    quantize_dynamic(
        str(fp32),
        str(path),
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
    )
    return path


def measure_speed(
    models: dict[str, Any], sentences: list[str], batch: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median sentences/s (wall and CPU) of each model's ``batch``, rounds alternating."""
    chunks = [sentences[i : i + batch] for i in range(0, len(sentences), batch)]
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            started, used = time.perf_counter(), time.process_time()
            for chunk in chunks:
                model.batch(chunk)
            wall[name].append(len(sentences) / (time.perf_counter() - started))
            cpu[name].append(len(sentences) / max(time.process_time() - used, 1e-9))
    return {
        name: {
            "per_second": statistics.median(wall[name]),
            "per_cpu_second": statistics.median(cpu[name]),
        }
        for name in models
    }


def load_in_subprocess(runtime: str, cache_dir: Path) -> dict[str, Any]:
    """Start a fresh interpreter that loads and warms the model; its own report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, runtime, str(cache_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def serve_until_ready(runtime: str, cache_dir: Path, data_dir: Path) -> dict[str, Any]:
    """``redline serve`` from spawn to ``/ready`` = 200: seconds, CPU seconds, resident MB."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    command = [
        sys.executable, "-m", "redline", "serve", "--port", str(port), "--cache-url", "none",
        "--model-runtime", runtime, "--model-cache-dir", str(cache_dir), "--data-dir",
        str(data_dir), "--log-level", "warning",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"redline serve exited: {process.stderr.read() if process.stderr else ''}"
                )
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/ready"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            if time.perf_counter() - started > 300:
                raise SystemExit("redline serve was not ready after 300 s")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        ticks = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "rss_mb": rss_kb / 1024,
            "torch_imported": "libtorch" in maps,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


class Encoder:
    """One runner, one thread, passes of 16 as the server runs them: ``batch(texts)``."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def batch(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.runner.encode(texts, 16))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from redline.serve.graph_cache import GraphCache
    from redline.serve.minilm import bundled_minilm_files
    from redline.serve.onnx_export import INT8_RECIPE, graph_for, quantize_int8
    from redline.serve.runtimes import OnnxRunner, make_runners, onnx_session
    from redline.serve.smoothing import calibration_texts

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The int8 recipe's calibration sentences are left out of what judges its vectors.
    calibration = set(calibration_texts(INT8_RECIPE["calibration_texts"]))
    found = english_sentences(args.sentences + len(calibration))
    sentences = [s for s in found if s not in calibration][: args.sentences]
    subset = sentences[: args.subset]
    files = bundled_minilm_files()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sentences": len(sentences),
        "subset": len(subset),
        "int8_recipe": INT8_RECIPE,
    }
    with tempfile.TemporaryDirectory(prefix="redline-runtime-bench-") as scratch:
        folder = Path(scratch)
        cache = GraphCache(folder / "cache")
        print(f"{len(sentences)} sentences; building graphs in {cache.directory}", flush=True)
        fp32 = graph_for(files, "onnx", cache)
        graph_for(files, "onnx-int8", cache)

        # The runtimes, and other int8 graphs of the same model for comparison.
        encoders: dict[str, Encoder] = {}
        for runtime in RUNTIMES:
            (runner,) = make_runners(files, runtime, workers=1, threads=1, cache=cache)
            encoders[runtime] = Encoder(runner)
        alternatives: dict[str, Path] = {}
        variants = {
            "int8 block 32, unsmoothed": {"block_size": 32, "smoothing": None},
            "int8 block 64, unsmoothed": {"block_size": 64, "smoothing": None},
            "int8 block 128, smoothed": {"block_size": 128},
        }
        for name, change in variants.items():
            alternatives[name] = path = folder / f"{_safe_name(name)}.onnx"
            quantize_int8(fp32, path, files.tokenizer(), {**INT8_RECIPE, **change})
        for per_channel in (False, True):
            name = f"dynamic per-{'channel' if per_channel else 'tensor'}"
            alternatives[name] = dynamic_graph(fp32, folder, per_channel)
        for name, path in alternatives.items():
            runner = OnnxRunner(onnx_session(path, 1), files.tokenizer(), files.dimension)
            encoders[name] = Encoder(runner)

        # 1. quality: fp32 and int8 on every sentence, everything on the subset.
        full = {name: encoders[name].batch(sentences) for name in ("onnx", "onnx-int8")}
        results["quality"] = {"onnx-int8": quality(full["onnx"], full["onnx-int8"])}
        print(f"quality on {len(sentences)}: {results['quality']}", flush=True)
        on_subset = {name: v[: len(subset)] for name, v in full.items()}
        for name, encoder in encoders.items():
            if name not in on_subset:
                on_subset[name] = encoder.batch(subset)
        results["quality_subset"] = {
            name: quality(on_subset["onnx"], v) for name, v in on_subset.items()
        }
        print(f"quality on {len(subset)}: {results['quality_subset']}", flush=True)

        # 2. in-process speed, one thread each, rounds alternating between runtimes.
        speed: dict[str, Any] = {}
        sample = sentences[: args.speed_sentences]
        for batch in (1, 32, 64):
            texts = sample[: max(args.speed_sentences // 4, 32)] if batch == 1 else sample
            chosen = encoders if batch == 32 else {r: encoders[r] for r in RUNTIMES}
            speed[str(batch)] = measure_speed(chosen, texts, batch, args.rounds)
            print(f"batch {batch}: {_short(speed[str(batch)])}", flush=True)
        results["speed"] = speed
        del encoders

        # 3. start: cold (export) and cached, in fresh processes; then the whole server.
        start: dict[str, Any] = {}
        cold = folder / "cold-cache"
        start["onnx cold (export)"] = load_in_subprocess("onnx", cold)
        start["onnx-int8 cold (quantize the cached fp32)"] = load_in_subprocess("onnx-int8", cold)
        for runtime in RUNTIMES:
            start[f"{runtime} load"] = load_in_subprocess(runtime, cache.directory)
        for runtime in RUNTIMES:
            data = folder / f"data-{runtime}"
            start[f"{runtime} serve to ready"] = serve_until_ready(runtime, cache.directory, data)
        results["start"] = start
    results["targets"] = _targets(results)
    return results


def _safe_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower())


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    int8 = results["quality"]["onnx-int8"]
    speed = results["speed"]
    ratios = {
        f"int8 / fp32 at batch {b}": {
            "per_second": speed[b]["onnx-int8"]["per_second"] / speed[b]["onnx"]["per_second"],
            "per_cpu_second": speed[b]["onnx-int8"]["per_cpu_second"]
            / speed[b]["onnx"]["per_cpu_second"],
        }
        for b in ("1", "32", "64")
    }
    cached = results["start"]["onnx serve to ready"]
    return {
        "int8 recall@10 >= 0.97": int8["recall_at_10"] >= 0.97,
        "int8 mean cosine >= 0.99": int8["mean_cosine"] >= 0.99,
        "ratios": ratios,
        "int8 >= 1.25x fp32 at batch 32 and 64 (per CPU second)": all(
            ratios[f"int8 / fp32 at batch {b}"]["per_cpu_second"] >= 1.25 for b in ("32", "64")
        ),
        "cached serve ready <= 3 s": cached["seconds"] <= 3.0,
        "cached serve <= 350 MB resident": cached["rss_mb"] <= 350,
    }


def _short(row: dict[str, dict[str, float]]) -> str:
    return ", ".join(
        f"{name} {v['per_second']:.0f}/s ({v['per_cpu_second']:.0f}/cpu-s)"
        for name, v in row.items()
    )


def print_tables(results: dict[str, Any]) -> None:
    for key, count in (("quality", results["sentences"]), ("quality_subset", results["subset"])):
        print(f"\nquality against fp32 onnx, {count} sentences")
        print(f"{'runtime':<24}{'recall@10':>10}{'mean cos':>10}{'min cos':>10}")
        for name, q in results[key].items():
            print(
                f"{name:<24}{q['recall_at_10']:>10.4f}{q['mean_cosine']:>10.5f}"
                f"{q['min_cosine']:>10.5f}"
            )
    print("\nin-process sentences/s (median of rounds; per CPU second in brackets)")
    print(f"{'runtime':<24}" + "".join(f"{'batch ' + b:>22}" for b in results["speed"]))
    for name in results["speed"]["32"]:
        cells = "".join(
            f"{row[name]['per_second']:>12.0f} ({row[name]['per_cpu_second']:>6.0f})"
            if name in row
            else f"{'-':>22}"
            for row in results["speed"].values()
        )
        print(f"{name:<24}{cells}")
    print("\nstart (fresh process)")
    print(f"{'what':<44}{'wall s':>8}{'cpu s':>8}{'RSS MB':>8}  torch")
    for name, s in results["start"].items():
        print(
            f"{name:<44}{s['seconds']:>8.2f}{s['cpu_seconds']:>8.2f}{s['rss_mb']:>8.0f}"
            f"  {'yes' if s['torch_imported'] else 'no'}"
        )
    print("\ntargets:", json.dumps(results["targets"], indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sentences, 1 round")
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--subset", type=int, default=1000, help="sentences for the comparisons")
    parser.add_argument("--speed-sentences", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.subset, args.speed_sentences, args.rounds = 1000, 300, 128, 1
    results = run(args)
    print_tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
