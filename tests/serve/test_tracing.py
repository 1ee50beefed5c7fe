"""OpenTelemetry tracing of a real ``redline serve`` process, exported over OTLP/HTTP to a real
receiver started here: span structure, ``traceparent`` continuity, batch links, exemplars, and
nothing of the SDK loaded when tracing is off."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from redline.serve import tracing
from tests.serve._otlp import ReceivedSpan, Receiver
from tests.serve._process import serve_process

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
ERROR_STATUS = 2


def _traced_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "redline-under-test",
        **extra,
    }


def _by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def _embed(url: str, texts: list[str], headers: dict[str, str] | None = None) -> httpx.Response:
    response = httpx.post(
        f"{url}/v1/embeddings", json={"input": texts}, headers=headers or {}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response


def test_request_spans_continue_the_incoming_traceparent(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serve_process(tmp_path, **_traced_env(receiver)) as url:
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        _embed(url, ["tracing one", "tracing two"], {"traceparent": traceparent})

        def complete(spans: list[ReceivedSpan]) -> bool:
            names = {span.name for span in spans if span.trace_id == TRACE_ID}
            wanted = {"POST /v1/embeddings", "auth", "cache.lookup", "queue.wait", "usage.write"}
            return wanted <= names and bool(_by_name(spans, "model.forward"))

        spans = receiver.wait_for(complete)

    [server] = [s for s in _by_name(spans, "POST /v1/embeddings") if s.trace_id == TRACE_ID]
    assert server.parent_span_id == PARENT_ID
    assert server.kind == SERVER_KIND
    assert server.service == "redline-under-test"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["url.path"] == "/v1/embeddings"
    assert server.attributes["http.route"] == "/v1/embeddings"
    assert server.attributes["http.response.status_code"] == 200
    for name in ("auth", "cache.lookup", "queue.wait", "usage.write"):
        [child] = [s for s in _by_name(spans, name) if s.trace_id == TRACE_ID]
        assert child.parent_span_id == server.span_id, name
    [lookup] = [s for s in _by_name(spans, "cache.lookup") if s.trace_id == TRACE_ID]
    assert lookup.attributes["redline.cache.keys"] == 2
    assert lookup.attributes["redline.cache.hits"] == 0
    [queue] = [s for s in _by_name(spans, "queue.wait") if s.trace_id == TRACE_ID]
    assert queue.attributes["redline.inputs"] == 2
    # The batch that served the request: its own trace, linked to the request's server span.
    batches = [s for s in _by_name(spans, "batch") if (TRACE_ID, server.span_id) in s.links]
    assert len(batches) == 1
    [batch] = batches
    assert batch.trace_id != TRACE_ID
    assert batch.parent_span_id == ""
    assert batch.attributes["redline.batch.size"] == 2
    [forward] = [s for s in _by_name(spans, "model.forward") if s.parent_span_id == batch.span_id]
    assert forward.trace_id == batch.trace_id


def test_one_batch_span_links_every_request_it_served(tmp_path: Path, receiver: Receiver) -> None:
    requests = 12
    # A slow model makes arrivals pile up while a batch runs, so batches serve many requests.
    env = _traced_env(receiver, REDLINE_HASHING_DELAY_MS="150")
    with serve_process(tmp_path, "--cache-url", "none", **env) as url:

        async def burst() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                answers = await asyncio.gather(
                    *(
                        client.post("/v1/embeddings", json={"input": f"concurrent {i}"})
                        for i in range(requests)
                    )
                )
            assert [a.status_code for a in answers] == [200] * requests

        asyncio.run(burst())

        def complete(spans: list[ReceivedSpan]) -> bool:
            servers = _by_name(spans, "POST /v1/embeddings")
            linked = sum(len(s.links) for s in _by_name(spans, "batch"))
            return len(servers) == requests and linked >= requests

        spans = receiver.wait_for(complete)

    servers = {(s.trace_id, s.span_id) for s in _by_name(spans, "POST /v1/embeddings")}
    batches = [s for s in _by_name(spans, "batch") if s.links]
    links = [link for batch in batches for link in batch.links]
    assert sorted(links) == sorted(servers)  # every request linked, once, by one batch
    assert max(len(batch.links) for batch in batches) >= 2
    for batch in batches:
        assert batch.attributes["redline.batch.requests"] == len(batch.links)
        assert len({trace_id for trace_id, _ in batch.links}) == len(batch.links)
    # The queue wait of each request sits in the request's own trace.
    queue_traces = {s.trace_id for s in _by_name(spans, "queue.wait")}
    assert queue_traces == {trace_id for trace_id, _ in servers}


_EXEMPLAR = re.compile(
    r'^redline_http_request_duration_seconds_bucket\{[^}]*route="/v1/embeddings"[^}]*\} \S+ '
    r'# \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\} \S+',
    re.MULTILINE,
)


def test_metrics_carry_trace_exemplars_in_openmetrics(tmp_path: Path, receiver: Receiver) -> None:
    with serve_process(tmp_path, **_traced_env(receiver)) as url:
        for i in range(3):
            _embed(url, [f"exemplar {i}"])
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        openmetrics = httpx.get(f"{url}/metrics", headers=accept, timeout=10)
        plain = httpx.get(f"{url}/metrics", timeout=10)
        spans = receiver.wait_for(lambda s: len(_by_name(s, "POST /v1/embeddings")) >= 3)

    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    exemplars = _EXEMPLAR.findall(openmetrics.text)
    assert exemplars, openmetrics.text[:2000]
    servers = {(s.span_id, s.trace_id) for s in _by_name(spans, "POST /v1/embeddings")}
    assert set(exemplars) <= servers  # each exemplar leads to a request's trace
    assert plain.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in plain.text


def test_rejected_and_unmatched_requests_get_server_spans(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serve_process(tmp_path, **_traced_env(receiver)) as url:
        answer = httpx.post(f"{url}/v1/embeddings", content=b"{", timeout=10)
        assert answer.status_code == 415
        missing = httpx.get(f"{url}/no/such/route", timeout=10)
        assert missing.status_code == 404
        paths = {"/v1/embeddings", "/no/such/route"}
        spans = receiver.wait_for(lambda s: paths <= {x.attributes.get("url.path") for x in s})

    [rejected] = _by_name(spans, "POST /v1/embeddings")
    assert rejected.attributes["http.response.status_code"] == 415
    [unmatched] = [s for s in spans if s.attributes.get("url.path") == "/no/such/route"]
    assert unmatched.name == "GET"
    assert "http.route" not in unmatched.attributes
    assert unmatched.attributes["http.response.status_code"] == 404
    assert unmatched.status_code != ERROR_STATUS


def test_tracing_off_loads_no_tracing_sdk(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # -X importtime lines (stderr, in the server log) name every module the process imports.
    with serve_process(tmp_path, PYTHONPROFILEIMPORTTIME="1", **environment) as url:
        _embed(url, ["no tracing here"], {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert (
            "trace_id"
            not in httpx.get(
                f"{url}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=10
            ).text
        )
    [log] = tmp_path.glob("serve-*.log")
    imported = set(re.findall(r"\|\s+([\w.]+)$", log.read_text(), re.MULTILINE))
    assert "redline.serve.app" in imported  # the log does list the server's imports
    loaded = sorted(
        name
        for name in imported
        if name.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter"))
        or name in ("redline.serve._tracing_sdk", "redline.serve._tracing_batches")
    )
    assert loaded == []


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_configured(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing.enabled_by_env(environ) is on


def test_hooks_are_no_ops_while_tracing_is_off() -> None:
    assert not tracing.is_enabled()
    with tracing.span("anything", {"a": 1}) as span:
        span.set_attribute("b", 2)
        assert not span.is_recording()
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}
    assert tracing.enqueue(3) is None
    assert tracing.exemplar() is None
    assert tracing.duplicates() is None  # the batcher gets no on_duplicate hook
    assert tracing.batch_exemplars([]) == (None, [])

    def batch(items: list[int]) -> list[int]:
        return items

    assert tracing.traced_batches(batch) is batch


def test_inject_propagates_the_client_span_outwards(in_memory: InMemorySpanExporter) -> None:
    headers: dict[str, str] = {}
    with tracing.span("request"), tracing.client_span("POST", {"server.address": "127.0.0.1"}):
        tracing.inject(headers)
    client, request = in_memory.get_finished_spans()
    assert client.name == "POST"
    assert client.kind == SpanKind.CLIENT
    assert client.parent is not None
    assert client.parent.span_id == request.context.span_id
    trace_id, span_id = f"{client.context.trace_id:032x}", f"{client.context.span_id:016x}"
    version, sent_trace, sent_parent, flags = headers["traceparent"].split("-")
    assert (version, sent_trace, sent_parent) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled


def test_a_failing_hook_marks_its_span_as_an_error(in_memory: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="bad key"), tracing.span("auth"):
        raise ValueError("bad key")
    [span] = in_memory.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.events[0].name == "exception"


async def test_traced_runs_the_call_in_its_span(in_memory: InMemorySpanExporter) -> None:
    @tracing.traced("usage.write")
    async def record(value: int) -> int:
        assert tracing.exemplar() is not None  # the span is current inside the call
        return value * 2

    assert await record(21) == 42
    [span] = in_memory.get_finished_spans()
    assert span.name == "usage.write"
