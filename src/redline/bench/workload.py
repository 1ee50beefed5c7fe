"""What each benchmark request sends: route, body and inputs, with a tunable hot set.

A :class:`Workload` describes the traffic; :meth:`Workload.sampler` gives a
:class:`RequestSampler` that produces one request body after another. A fraction ``repeat``
of the requests is drawn from a small hot set (the same inputs again and again, so a cache
can hit); the rest carry fresh inputs that no earlier run has sent (each sampler has its own
random nonce), so they miss.

Example::

    workload = Workload(route="embeddings", inputs_per_request=2, repeat=0.9)
    sampler = workload.sampler(seed=1)
    sampler.path, sampler.next_body()   # ('/v1/embeddings', b'{"input": [...], ...}')
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from redline.exceptions import BenchError

__all__ = ["ROUTES", "RequestSampler", "Workload", "read_inputs_file"]

Route = Literal["embeddings", "predict", "custom"]

#: The routes ``--route`` accepts.
ROUTES: tuple[str, ...] = ("embeddings", "predict", "custom")


_ROUTE_PATHS = {"embeddings": "/v1/embeddings", "predict": "/v1/predict"}
_WORDS = [
    "cache",
    "latency",
    "batch",
    "token",
    "vector",
    "model",
    "request",
    "server",
    "queue",
    "redis",
    "nginx",
    "throughput",
    "replica",
    "embedding",
    "sentence",
    "tail",
    "percentile",
    "warm",
    "cold",
    "shard",
    "cluster",
    "worker",
]


def read_inputs_file(path: str | Path) -> tuple[str, ...]:
    """Non-empty lines of a text file, one input each; :class:`BenchError` if none or unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read inputs file {str(path)!r}: {exc.strerror}") from exc
    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not lines:
        raise BenchError(f"inputs file {str(path)!r} has no non-empty lines")
    return lines


@dataclass(frozen=True)
class Workload:
    """The traffic a benchmark sends.

    Parameters that matter: ``route`` (``embeddings``, ``predict`` or ``custom``), ``path`` and
    ``body`` (custom route only; the body is a JSON template in which ``{{input}}`` becomes one
    JSON string and ``{{inputs}}`` a JSON list of ``inputs_per_request`` strings; no body sends
    GET), ``inputs`` (empty: generated sentences), ``inputs_per_request``, ``repeat`` (0..1,
    the fraction of requests drawn from the hot set of ``hot_set_size`` requests), ``model``
    (sent as ``"model"`` to ``/v1/embeddings``; ``None`` omits the field so a redline server
    uses its default model — other OpenAI-compatible servers usually need it).

    Example::

        Workload(route="custom", path="/echo", body='{"q": {{input}}}')
    """

    route: Route = "embeddings"
    path: str | None = None
    body: str | None = None
    inputs: tuple[str, ...] = ()
    inputs_per_request: int = 1
    repeat: float = 0.0
    hot_set_size: int = 16
    model: str | None = None
    labels: tuple[str, ...] = ("positive", "negative")

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise BenchError(f"--route must be one of {', '.join(ROUTES)}, got {self.route!r}")
        if not 0.0 <= self.repeat <= 1.0:
            raise BenchError(f"--repeat must be within 0..1, got {self.repeat}")
        if self.inputs_per_request < 1:
            raise BenchError(f"--inputs-per-request must be >= 1, got {self.inputs_per_request}")
        if self.hot_set_size < 1:
            raise BenchError(f"hot_set_size must be >= 1, got {self.hot_set_size}")
        if self.route == "custom":
            if not self.path or not self.path.startswith("/"):
                raise BenchError(
                    f"--route custom needs --path starting with '/', got {self.path!r}"
                )
            if self.body is not None:
                try:
                    json.loads(_fill(self.body, ["x"] * self.inputs_per_request))
                except ValueError as exc:
                    raise BenchError(f"--body is not a valid JSON template: {exc}") from exc
        elif self.path is not None or self.body is not None:
            raise BenchError("--path and --body are only allowed with --route custom")

    @property
    def request_path(self) -> str:
        """The path every request of this workload goes to."""
        return self.path if self.route == "custom" and self.path else _ROUTE_PATHS[self.route]

    @property
    def method(self) -> str:
        """``POST``, or ``GET`` for a custom route without a body."""
        return "GET" if self.route == "custom" and self.body is None else "POST"

    def sampler(self, seed: int | None = None) -> RequestSampler:
        """A fresh request producer (its own RNG and nonce, so fresh inputs are truly new)."""
        return RequestSampler(self, seed)

    def describe(self) -> dict[str, object]:
        """The JSON-ready config of this workload (for the report)."""
        return {
            "route": self.route,
            "path": self.request_path,
            "method": self.method,
            "inputs": "file" if self.inputs else "generated",
            "inputs_per_request": self.inputs_per_request,
            "repeat": self.repeat,
            "hot_set_size": self.hot_set_size,
            "model": self.model,
        }


class RequestSampler:
    """Produces request bodies for one :class:`Workload` (not thread-safe; one per process)."""

    def __init__(self, workload: Workload, seed: int | None = None) -> None:
        self._workload = workload
        self._random = random.Random(seed)
        self._nonce = uuid.UUID(int=self._random.getrandbits(128)).hex[:12]
        self._fresh_count = 0
        self._file_cursor = 0
        self._hot = [self._fresh_inputs() for _ in range(workload.hot_set_size)]
        self.hot_requests = 0
        self.fresh_requests = 0

    @property
    def path(self) -> str:
        """The request path."""
        return self._workload.request_path

    @property
    def method(self) -> str:
        """The HTTP method."""
        return self._workload.method

    def next_inputs(self) -> list[str]:
        """The inputs of the next request (hot with probability ``repeat``)."""
        if self._workload.repeat > 0 and self._random.random() < self._workload.repeat:
            self.hot_requests += 1
            return self._random.choice(self._hot)
        self.fresh_requests += 1
        return self._fresh_inputs()

    def next_body(self) -> bytes | None:
        """The JSON body of the next request (``None`` for a bodiless GET)."""
        workload = self._workload
        if workload.method == "GET":
            return None
        inputs = self.next_inputs()
        if workload.route == "custom":
            return _fill(workload.body or "", inputs).encode()
        single = workload.inputs_per_request == 1
        payload: dict[str, object]
        if workload.route == "embeddings":
            payload = {"input": inputs[0] if single else inputs}
            if workload.model is not None:
                payload["model"] = workload.model
        else:
            payload = {"text": inputs[0] if single else inputs, "labels": list(workload.labels)}
        return json.dumps(payload).encode()

    def _fresh_inputs(self) -> list[str]:
        return [self._fresh_input() for _ in range(self._workload.inputs_per_request)]

    def _fresh_input(self) -> str:
        self._fresh_count += 1
        if self._workload.inputs:
            line = self._workload.inputs[self._file_cursor % len(self._workload.inputs)]
            self._file_cursor += 1
            return line
        words = " ".join(self._random.choices(_WORDS, k=8))
        return f"{words} #{self._nonce}-{self._fresh_count}"

    def __repr__(self) -> str:
        return (
            f"<RequestSampler {self.method} {self.path} hot={self.hot_requests} "
            f"fresh={self.fresh_requests}>"
        )


def _fill(template: str, inputs: Sequence[str]) -> str:
    """Substitute ``{{input}}`` and ``{{inputs}}`` in a JSON body template."""
    return template.replace("{{inputs}}", json.dumps(list(inputs))).replace(
        "{{input}}", json.dumps(inputs[0])
    )
