"""Drive ``wrk`` (the C load generator) with ``post_sentences.lua`` and read back its result.

Example::

    texts = SentenceFile.write(folder / "load.jsonl", load_sentences(50_000))
    result = run_wrk("http://127.0.0.1:8000/v1/embeddings", texts, seconds=15, warmup=4)
    result.rate, result.latency_ms["p50"]
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

LUA_SCRIPT = Path(__file__).with_name("post_sentences.lua")
_MARKER = "WRK_RESULT "

Mode = Literal["distinct", "repeat"]


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """One measured wrk run: completed requests, errors by kind, latency percentiles (ms)."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    connections: int = 0

    @property
    def ok(self) -> int:
        """Requests answered with a 2xx/3xx status."""
        return self.requests - self.errors.get("status", 0)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class SentenceFile:
    """A file of JSON string literals, one a line, and where the next run should start in it.

    Each run starts after the lines earlier runs used, so "distinct" inputs stay distinct
    across warm-ups, rounds and servers (a server with a cache never sees a repeat).
    """

    path: Path
    lines: int
    cursor: int = 0

    @classmethod
    def write(cls, path: Path, texts: list[str]) -> SentenceFile:
        path.write_text("".join(json.dumps(text) + "\n" for text in texts))
        return cls(path, len(texts))

    def take(self, used: int) -> int:
        """The start line for a run, then move past the *used* lines it may send."""
        start = self.cursor
        self.cursor += used
        return start


def parse_wrk_output(text: str, connections: int = 0) -> WrkResult:
    """The ``WRK_RESULT`` line of *text* (wrk's stdout with our Lua script) as a result."""
    for line in reversed(text.splitlines()):
        if line.startswith(_MARKER):
            data: dict[str, Any] = json.loads(line[len(_MARKER) :])
            break
    else:
        raise WrkError(f"no {_MARKER.strip()} line in wrk's output:\n{text[-2000:]}")
    latency = {name: value / 1000.0 for name, value in data["latency_us"].items()}
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        errors={name: int(value) for name, value in data["errors"].items()},
        latency_ms=latency,
        connections=connections,
    )


def wrk_binary() -> str | None:
    """Path of ``wrk``, or None (``scripts/install-system-deps.sh`` installs it)."""
    return shutil.which("wrk")


def run_wrk(
    url: str,
    texts: SentenceFile,
    *,
    seconds: float,
    connections: int = 64,
    model: str = "all-MiniLM-L6-v2",
    mode: Mode = "distinct",
    warmup: float = 0.0,
    timeout_s: float = 30.0,
) -> WrkResult:
    """*connections* keep-alive connections on one wrk thread for *seconds* (after *warmup*).

    The warm-up is a separate wrk run whose numbers are dropped; both draw their texts from
    *texts* (distinct mode moves its cursor past what they may have used).
    """
    if warmup > 0:
        _wrk_once(url, texts, warmup, connections, model, mode, timeout_s)
    return _wrk_once(url, texts, seconds, connections, model, mode, timeout_s)


def _wrk_once(
    url: str,
    texts: SentenceFile,
    seconds: float,
    connections: int,
    model: str,
    mode: Mode,
    timeout_s: float,
) -> WrkResult:
    binary = wrk_binary()
    if binary is None:
        raise WrkError("wrk is not installed (scripts/install-system-deps.sh installs it)")
    start = texts.cursor if mode == "distinct" else 0
    command = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += [f"--timeout={max(1, round(timeout_s))}s", "-s", str(LUA_SCRIPT), url]
    command += ["--", str(texts.path), str(start), model, mode]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False
    )
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr[-2000:]}")
    result = parse_wrk_output(done.stdout, connections)
    if mode == "distinct":
        # Requests still in flight when wrk stopped were sent too: skip past them as well.
        texts.take(result.requests + result.error_count + connections)
    return result
