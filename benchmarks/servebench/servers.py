"""The servers under load, each a subprocess on a free loopback port.

``redline serve`` on its defaults; a bare uvicorn + Starlette endpoint that answers a constant
body (the HTTP ceiling); infinity-emb from its own virtualenv, on the ONNX folders
``onnx_files`` makes from the same model.

Example::

    server = redline_server(folder, runtime="onnx")
    server.wait_ready()
    ...
    server.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from redline._ports import free_port

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}

BARE_APP = """
import asyncio, sys, time, uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
body = open(sys.argv[2], "rb").read()
busy = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
def spin() -> None:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
async def embeddings(request: Request) -> Response:
    await request.body()
    if busy > 0:
        await asyncio.get_running_loop().run_in_executor(None, spin)
    return Response(body, media_type="application/json")
async def health(request: Request) -> Response:
    return Response(b"ok")
app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]),
                        Route("/health", health)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


class Server:
    """A server subprocess, waited for on a readiness URL, stopped with SIGTERM."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        *,
        ready_path: str,
        embeddings_path: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.ready_url = self.base + ready_path
        self.embeddings_url = self.base + embeddings_path
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.started = time.monotonic()
        self.ready_after_s: float | None = None
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    def wait_ready(self, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                    if response.status == 200:
                        self.ready_after_s = round(time.monotonic() - self.started, 1)
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def rss_mb(self) -> float | None:
        """Resident memory of the server process, MB (Linux), or None."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/status").read_text().split("VmRSS:")[1]
            return round(int(fields.split()[0]) / 1024, 1)
        except (OSError, IndexError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server process has used so far."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def post_json(url: str, body: dict[str, Any], timeout: float = 120) -> bytes:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read()
        return data


def redline_server(data_dir: Path, runtime: str = "onnx") -> Server:
    """``redline serve`` on its defaults (memory cache, batching, workers), on *runtime*."""
    port = free_port()
    command = [sys.executable, "-m", "redline", "serve", "--port", str(port)]
    command += ["--log-level", "warning", "--data-dir", str(data_dir)]
    command += ["--model-runtime", runtime]
    return Server(
        f"redline serve ({runtime})",
        command,
        port,
        ready_path="/ready",
        embeddings_path="/v1/embeddings",
        env=OFFLINE,
    )


def bare_server(body_file: Path, busy: float = 0.0) -> Server:
    """Plain uvicorn + Starlette answering POST /v1/embeddings with *body_file*'s bytes.

    With *busy* > 0 it first keeps a worker thread busy for *busy* seconds (the event loop
    idles meanwhile, as a server's loop does while its model thread runs): a lone client's
    p50 minus *busy* is then what HTTP and one thread round trip cost after such an idle,
    with no model and no server code of ours."""
    port = free_port()
    command = [sys.executable, "-c", BARE_APP, str(port), str(body_file)]
    if busy > 0:
        command.append(repr(busy))
    return Server(
        "bare uvicorn + Starlette",
        command,
        port,
        ready_path="/health",
        embeddings_path="/v1/embeddings",
    )


# -- infinity-emb -----------------------------------------------------------------------

INFINITY_ENGINES = ("int8", "fp32")


def infinity_binary(venv: Path) -> Path | None:
    binary = venv / "bin" / "infinity_emb"
    return binary if binary.exists() else None


def infinity_versions(venv: Path) -> str:
    """The versions of the packages that decide infinity's speed, as its venv has them."""
    names = ("infinity_emb", "optimum", "onnxruntime", "torch", "transformers", "numpy")
    script = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try: print(name, m.version(name))\n"
        "    except m.PackageNotFoundError: print(name, '-')\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, *names],
        capture_output=True,
        text=True,
        check=False,
    )
    return ", ".join(done.stdout.split("\n")).strip(", ") or done.stderr[-300:]


def infinity_server(venv: Path, model_folder: Path, engine: str, model_name: str) -> Server:
    """infinity-emb's optimum engine on *model_folder*, with mean pooling (this model's).

    It runs from inside the folder with ``--model-id .``: given an absolute path, infinity
    0.0.78 passes the ONNX file's full path where optimum expects a bare file name. Each
    folder gets its own HF_HOME, where infinity keeps what it derives from the graph.
    """
    binary = infinity_binary(venv)
    if binary is None:
        raise RuntimeError(f"infinity-emb is not installed in {venv}")
    port = free_port()
    command = [str(binary), "v2", "--model-id", ".", "--served-model-name", model_name]
    command += ["--engine", "optimum", "--device", "cpu", "--pooling-method", "mean"]
    command += ["--port", str(port), "--host", "127.0.0.1", "--log-level", "warning"]
    env = {**OFFLINE, "HF_HOME": str(model_folder / ".hf-home")}
    return Server(
        f"infinity-emb optimum {engine}",
        command,
        port,
        ready_path="/health",
        embeddings_path="/embeddings",
        env=env,
        cwd=model_folder,
    )


def infinity_log_notes(server: Server) -> list[str]:
    """What infinity said about its engine that a reader of the figures should know."""
    text = " ".join(server.output().split())
    notes = []
    if "Optimization failed" in text:
        notes.append("its graph optimisation failed at start, it serves the unoptimised graph")
    return notes
