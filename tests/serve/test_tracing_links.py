"""Tracing beyond one request's own spans: which cache tier answered a lookup, batch links to
the requests whose inputs joined an identical one in flight, and trace exemplars on the queue,
model and cache histograms. End to end through a real ``redline serve`` and a real OTLP/HTTP
receiver, and in process against a real Redis."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from redline import _trace_hooks
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.cache.tiered import TieredCache
from redline.exceptions import BatchTimeout
from redline.serve import tracing
from redline.serve._tracing_sdk import SdkTracing
from redline.serve.engine import InferenceEngine
from redline.serve.testing import HashingModel
from tests.serve._otlp import ReceivedSpan, Receiver
from tests.serve._process import serve_process


def _env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }


def _named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def _in_trace(spans: list[ReceivedSpan], name: str, trace_id: str) -> list[ReceivedSpan]:
    return [span for span in _named(spans, name) if span.trace_id == trace_id]


def test_the_cache_hook_is_set_only_while_tracing_is_on() -> None:
    assert _trace_hooks._cache_read is None  # off: a cache read pays one global test
    _trace_hooks.cache_read(1, 2)  # and reporting is a no-op
    tracing.install(SdkTracing(TracerProvider()))
    try:
        assert _trace_hooks._cache_read is not None
    finally:
        tracing.uninstall()
    assert _trace_hooks._cache_read is None


async def test_cache_lookup_span_says_which_tier_answered(
    in_memory: InMemorySpanExporter, redis_url: str
) -> None:
    namespace = f"tr{uuid.uuid4().hex[:10]}"
    cache = TieredCache(MemoryCache(), RedisCache.from_url(redis_url, namespace=namespace))
    async with cache:
        await cache.set("near", 1)  # in both tiers
        await cache.l2.set("far", 2)  # only in Redis
        lookups = [["near"], ["near", "far", "nowhere"], ["nowhere"]]
        for keys in lookups:
            with tracing.span("cache.lookup", {"redline.cache.keys": len(keys)}):
                await cache.get_many(keys)
        with tracing.span("auth"):  # a read outside a lookup span is not reported on it
            await cache.get_many(["near"])
        alone = MemoryCache()
        await alone.set("here", 3)
        with tracing.span("cache.lookup", {"redline.cache.keys": 2}):
            await alone.get_many(["here", "absent"])
        await cache.clear()
    spans = in_memory.get_finished_spans()
    lookup = [dict(span.attributes or {}) for span in spans if span.name == "cache.lookup"]
    picked = [
        {k.removeprefix("redline.cache."): v for k, v in attrs.items() if k != "redline.cache.keys"}
        for attrs in lookup
    ]
    assert picked == [
        {"tier": "l1", "l1_hits": 1, "l2_hits": 0, "misses": 0, "result": "hit"},
        {"tier": "l2", "l1_hits": 1, "l2_hits": 1, "misses": 1, "result": "partial"},
        {"tier": "miss", "l1_hits": 0, "l2_hits": 0, "misses": 1, "result": "miss"},
        {"tier": "l1", "l1_hits": 1, "l2_hits": 0, "misses": 1, "result": "partial"},
    ]
    [auth] = [span for span in spans if span.name == "auth"]
    assert not any(key.startswith("redline.cache.") for key in auth.attributes or {})


def test_cache_lookup_spans_of_a_partial_and_a_full_hit(tmp_path: Path, receiver: Receiver) -> None:
    with serve_process(tmp_path, **_env(receiver)) as url:
        for texts in (["first", "second"], ["first", "third"], ["second"]):
            answer = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=30)
            assert answer.status_code == 200, answer.text

        def complete(spans: list[ReceivedSpan]) -> bool:
            return (
                len(_named(spans, "POST /v1/embeddings")) == 3 and len(_named(spans, "batch")) >= 2
            )

        spans = receiver.wait_for(complete)

    servers = _named(spans, "POST /v1/embeddings")
    by_trace = {server.trace_id: server for server in servers}
    lookups = {span.trace_id: span.attributes for span in _named(spans, "cache.lookup")}
    results = sorted(
        (
            a["redline.cache.keys"],
            a["redline.cache.result"],
            a["redline.cache.tier"],
            a["redline.cache.misses"],
        )
        for a in lookups.values()
    )
    assert results == [(1, "hit", "l1", 0), (2, "miss", "miss", 2), (2, "partial", "l1", 1)]
    linked = {link for batch in _named(spans, "batch") for link in batch.links}
    for trace_id, attributes in lookups.items():
        server = by_trace[trace_id]
        queued = _in_trace(spans, "queue.wait", trace_id)
        if attributes["redline.cache.result"] == "hit":  # nothing computed: no batch served it
            assert queued == []
            assert (trace_id, server.span_id) not in linked
        else:  # its misses were computed: the batch that did it links the request
            assert len(queued) == 1
            assert (trace_id, server.span_id) in linked


def test_a_batch_links_requests_that_joined_its_computation(
    tmp_path: Path, receiver: Receiver
) -> None:
    # A slow model: "same" waits behind "blocker" (first wave joins it queued), then runs
    # while the second wave arrives (they join it running). One computation serves them all.
    env = _env(receiver, REDLINE_HASHING_DELAY_MS="1200")
    with serve_process(tmp_path, "--cache-url", "none", **env) as url:

        async def load() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:

                async def embed(text: str, after: float) -> None:
                    await asyncio.sleep(after)
                    answer = await client.post("/v1/embeddings", json={"input": text})
                    assert answer.status_code == 200, answer.text

                await asyncio.gather(
                    embed("blocker", 0.0),
                    *(embed("same", 0.4) for _ in range(3)),
                    *(embed("same", 1.8) for _ in range(3)),
                )

        asyncio.run(load())
        spans = receiver.wait_for(
            lambda s: len(_named(s, "POST /v1/embeddings")) == 7 and len(_named(s, "batch")) >= 2
        )

    batches = _named(spans, "batch")
    assert len(batches) == 2  # blocker, and one computation of "same"
    servers = {(s.trace_id, s.span_id) for s in _named(spans, "POST /v1/embeddings")}
    assert sorted(link for b in batches for link in b.links) == sorted(servers)
    [same] = [batch for batch in batches if len(batch.links) > 1]
    assert len(same.links) == 6
    assert same.attributes["redline.batch.requests"] == 6
    assert same.attributes["redline.batch.size"] == 1
    joined = [attrs.get("redline.joined") for attrs in same.link_attributes]
    assert sorted(joined, key=str) == [None] + [True] * 5  # the first one computed it
    # Every joiner's queue wait links back to the batch that served it.
    for trace_id, _ in same.links:
        [queued] = _in_trace(spans, "queue.wait", trace_id)
        assert (same.trace_id, same.span_id) in queued.links


async def test_a_joiner_stays_linked_when_the_request_it_joined_gives_up(
    in_memory: InMemorySpanExporter,
) -> None:
    engine = InferenceEngine(HashingModel(8, delay=0.4), max_batch_size=4, max_wait=0.0)
    await engine.start()

    async def request(name: str, text: str, timeout: float | None = None) -> None:
        with tracing.span(name):
            await engine.embed([text], timeout=timeout)

    try:
        blocker = asyncio.create_task(request("blocker", "blocker"))
        await asyncio.sleep(0.05)  # the blocker's batch runs; "same" will wait behind it
        first = asyncio.create_task(request("first", "same", timeout=0.15))
        await asyncio.sleep(0.05)
        joiner = asyncio.create_task(request("joiner", "same"))  # joins the queued "same"
        with pytest.raises(BatchTimeout):
            await first  # gives up before "same" starts: its input still runs, for the joiner
        await asyncio.gather(blocker, joiner)
    finally:
        await engine.close()
    spans = in_memory.get_finished_spans()
    requests = {span.name: span.context for span in spans if span.parent is None}
    [same] = [
        s
        for s in spans
        if s.name == "batch"
        and (s.attributes or {}).get("redline.batch.size") == 1
        and s.links
        and s.links[0].context.trace_id != requests["blocker"].trace_id
    ]
    assert [link.context.span_id for link in same.links] == [requests["joiner"].span_id]
    assert [dict(link.attributes or {}) for link in same.links] == [{"redline.joined": True}]
    assert (same.attributes or {}).get("redline.batch.requests") == 1
    waits = [span for span in spans if span.name == "queue.wait"]
    assert len(waits) == 3  # every request's wait ended, the one that gave up too
    [joined_wait] = [w for w in waits if w.context.trace_id == requests["joiner"].trace_id]
    assert [link.context.span_id for link in joined_wait.links] == [same.context.span_id]


_EXEMPLAR = re.compile(
    r'^(redline_\w+)_bucket\{[^}]*\} \S+ # \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\}',
    re.MULTILINE,
)


def test_queue_model_and_cache_histograms_carry_trace_exemplars(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serve_process(tmp_path, **_env(receiver)) as url:
        for i in range(3):
            answer = httpx.post(f"{url}/v1/embeddings", json={"input": [f"ex {i}"]}, timeout=30)
            assert answer.status_code == 200
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        text = httpx.get(f"{url}/metrics", headers=accept, timeout=10).text
        plain = httpx.get(f"{url}/metrics", timeout=10).text
        spans = receiver.wait_for(lambda s: len(_named(s, "batch")) >= 3)

    found: dict[str, set[tuple[str, str]]] = {}
    for metric, span_id, trace_id in _EXEMPLAR.findall(text):
        found.setdefault(metric, set()).add((trace_id, span_id))

    def ids(name: str) -> set[tuple[str, str]]:
        return {(span.trace_id, span.span_id) for span in _named(spans, name)}

    assert found.get("redline_batch_queue_wait_seconds"), text[:3000]
    assert found["redline_batch_queue_wait_seconds"] <= ids("queue.wait")
    assert found.get("redline_inference_duration_seconds")
    assert found["redline_inference_duration_seconds"] <= ids("batch")
    assert found.get("redline_cache_lookup_duration_seconds")
    assert found["redline_cache_lookup_duration_seconds"] <= ids("cache.lookup")
    assert "redline_cache_lookup_duration_seconds_bucket" in plain
    assert "trace_id" not in plain
