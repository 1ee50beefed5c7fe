"""How fast ``redline serve`` starts with a cached ONNX export, and how much memory it holds.

The issue's target: ready (``GET /ready`` is 200) within 3 s of the process starting, at most
350 MB resident, without importing torch. One start first fills the graph cache (and is not
counted); then, in alternating rounds, ``redline serve`` on its defaults and a bare uvicorn +
Starlette server (the floor on this box at this moment: the interpreter, uvicorn and Starlette
starting up) are started, polled every 20 ms, and stopped. On a box shared with other work
the bare server's time says how slow the box is now: read redline's time against it.

Per start: seconds to the first HTTP answer (``/health``), seconds to ready, resident MB at
ready (``VmRSS``) and the peak (``VmHWM``), and whether torch was loaded (its library in the
process's memory map). ``--importtime`` adds one start under ``python -X importtime`` and lists
the imports that cost the most. Prints a table and writes ``benchmarks/results/start_bench.json``.

    python benchmarks/start_bench.py --runs 5 --importtime
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redline._ports import free_port
from servebench.servers import BARE_APP, OFFLINE

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "start_bench.json"
READY_TARGET_S = 3.0
RSS_TARGET_MB = 350.0


@dataclass
class Start:
    """One start of one server."""

    answering_s: float
    ready_s: float
    rss_mb: float
    peak_mb: float
    torch_loaded: bool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="starts of each server")
    parser.add_argument("--runtime", default="onnx", help="redline's --model-runtime")
    parser.add_argument("--importtime", action="store_true", help="list the costliest imports")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _memory(pid: int) -> tuple[float, float, bool]:
    """Resident and peak MB, and whether torch's library is mapped."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    maps = Path(f"/proc/{pid}/maps").read_text()
    rss, peak = (int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))
    return rss, peak, "libtorch" in maps


def start_once(
    command: list[str], port: int, ready_path: str, env: dict[str, str], timeout: float
) -> Start:
    """Start *command*, poll until *ready_path* answers 200, measure, stop it."""
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    answering: float | None = None
    try:
        while True:
            elapsed = time.monotonic() - started
            if proc.poll() is not None:
                error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{command[:4]} exited with {proc.returncode}: {error[-2000:]}")
            if elapsed > timeout:
                raise TimeoutError(f"{command[:4]} not ready after {timeout}s")
            if answering is None and _status(base + "/health") is not None:
                answering = elapsed
            if answering is not None and _status(base + ready_path) == 200:
                ready = time.monotonic() - started
                rss, peak, torch_loaded = _memory(proc.pid)
                return Start(round(answering, 3), round(ready, 3), rss, peak, torch_loaded)
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redline_command(port: int, data_dir: Path, runtime: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        *flags,
        "-m",
        "redline",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--data-dir",
        str(data_dir),
        "--model-runtime",
        runtime,
    ]


def start_redline(runtime: str, timeout: float) -> Start:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="startbench-") as folder:
        command = redline_command(port, Path(folder), runtime)
        return start_once(command, port, "/ready", OFFLINE, timeout)


def start_bare(timeout: float) -> Start:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="startbench-") as folder:
        body = Path(folder) / "body.json"
        body.write_bytes(b"{}")
        command = [sys.executable, "-c", BARE_APP, str(port), str(body)]
        return start_once(command, port, "/health", {}, timeout)


def costliest_imports(runtime: str, timeout: float, top: int = 15) -> list[dict[str, Any]]:
    """One start under ``-X importtime``: the *top* imports (top-level ones and the imports
    they make directly) by cumulative time, what not importing them would save at most."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="startbench-") as folder:
        log = Path(folder) / "importtime.txt"
        command = redline_command(port, Path(folder), runtime, "-X", "importtime")
        base = f"http://127.0.0.1:{port}"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                command, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL, stderr=sink
            )
            deadline = time.monotonic() + timeout
            try:
                while _status(base + "/ready") != 200:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redline serve did not get ready under -X importtime")
                    time.sleep(0.05)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        rows: list[dict[str, Any]] = []
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            parts = line[len("import time:") :].split("|")
            own_us, cumulative_us, label = int(parts[0]), int(parts[1]), parts[2]
            depth = (len(label) - len(label.lstrip(" ")) - 1) // 2  # " " + "  " per level
            rows.append(
                {
                    "module": label.strip(),
                    "depth": depth,
                    "cumulative_ms": round(cumulative_us / 1000, 1),
                    "self_ms": round(own_us / 1000, 1),
                }
            )
        top_level = [row for row in rows if row["depth"] <= 1]
        return sorted(top_level, key=lambda row: -float(row["cumulative_ms"]))[:top]


def summary(starts: list[Start]) -> dict[str, Any]:
    return {
        "answering_s": round(statistics.median(s.answering_s for s in starts), 2),
        "ready_s": round(statistics.median(s.ready_s for s in starts), 2),
        "ready_s_min": round(min(s.ready_s for s in starts), 2),
        "rss_mb": round(statistics.median(s.rss_mb for s in starts), 1),
        "peak_mb": round(max(s.peak_mb for s in starts), 1),
        "torch_loaded": any(s.torch_loaded for s in starts),
        "starts": [asdict(s) for s in starts],
    }


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "missed"


def main() -> None:
    args = parse_args()
    print("filling the graph cache (one start, not counted)", flush=True)
    start_redline(args.runtime, max(args.timeout, 600.0))
    redline: list[Start] = []
    bare: list[Start] = []
    for round_ in range(args.runs):
        redline.append(start_redline(args.runtime, args.timeout))
        bare.append(start_bare(args.timeout))
        print(f"round {round_ + 1}: redline {redline[-1]}, bare {bare[-1]}", flush=True)
    r, b = summary(redline), summary(bare)
    imports = costliest_imports(args.runtime, args.timeout) if args.importtime else []
    load = os.getloadavg()
    print()
    print(f"{'server':<32} {'answering s':>11} {'ready s':>8} {'RSS MB':>7} {'peak MB':>8}  torch")
    for name, row in ((f"redline serve ({args.runtime})", r), ("bare uvicorn + Starlette", b)):
        print(
            f"{name:<32} {row['answering_s']:>11} {row['ready_s']:>8} {row['rss_mb']:>7} "
            f"{row['peak_mb']:>8}  {'yes' if row['torch_loaded'] else 'no'}"
        )
    print(
        f"\nready {r['ready_s']} s (target <= {READY_TARGET_S} s: "
        f"{verdict(r['ready_s'], READY_TARGET_S)}), {r['rss_mb']} MB (target <= "
        f"{RSS_TARGET_MB} MB: {verdict(r['rss_mb'], RSS_TARGET_MB)}); bare floor "
        f"{b['ready_s']} s; load average {load[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for row in imports:
        print(f"  import {row['module']:<44} {row['cumulative_ms']:>8} ms cumulative")
    results = {
        "redline": r,
        "bare": b,
        "runtime": args.runtime,
        "targets": {"ready_s": READY_TARGET_S, "rss_mb": RSS_TARGET_MB},
        "costliest_imports": imports,
        "box": {"cpus": os.cpu_count(), "load_average": load, "python": platform.python_version()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
