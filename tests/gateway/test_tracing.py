"""Every upstream call of a real gateway process is a client span in the request's trace, and
its ``traceparent`` goes out to the upstream; with tracing off nothing is sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve
from tests.serve._otlp import ReceivedSpan, Receiver, otlp_receiver

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
FAILING_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "00f067aa0ba902b7"
SERVER_KIND, CLIENT_KIND = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
ERROR_STATUS = 2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as receiver:
        yield receiver


def _in(spans: list[ReceivedSpan], trace_id: str, kind: int) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id and s.kind == kind]


def test_upstream_calls_are_client_spans_of_the_request(receiver: Receiver) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    with FakeUpstream(dimension=8) as fake:
        spec = f"up={fake.url}?model=fake&dimension=8&timeout=3"
        with Serve("--model", "none", "--upstream", spec, env=env) as gw:
            answer = httpx.post(
                f"{gw.url}/v1/embeddings",
                json={"input": ["traced one", "traced two"]},
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            fake.mode = "500"
            failed = httpx.post(
                f"{gw.url}/v1/embeddings",
                json={"input": "traced failure"},
                headers={"traceparent": f"00-{FAILING_TRACE_ID}-{PARENT_ID}-01"},
                timeout=30,
            )
            assert failed.status_code in (502, 503)

            def complete(spans: list[ReceivedSpan]) -> bool:
                return bool(_in(spans, TRACE_ID, CLIENT_KIND)) and (
                    len(_in(spans, FAILING_TRACE_ID, CLIENT_KIND)) >= 3
                    and bool(_in(spans, FAILING_TRACE_ID, SERVER_KIND))
                )

            spans = receiver.wait_for(complete)

    [server] = _in(spans, TRACE_ID, SERVER_KIND)
    assert server.parent_span_id == PARENT_ID
    [client] = _in(spans, TRACE_ID, CLIENT_KIND)
    assert client.name == "POST /v1/embeddings"
    assert client.parent_span_id == server.span_id
    assert client.attributes["http.request.method"] == "POST"
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["server.port"] == fake.port
    assert client.attributes["url.full"] == f"{fake.url}/v1/embeddings"
    assert client.attributes["http.response.status_code"] == 200
    assert "error.type" not in client.attributes
    # The upstream got the client span's context: same trace, the client span as parent.
    assert fake.traceparents[0] == f"00-{TRACE_ID}-{client.span_id}-01"

    # Each failed try is its own client span, marked as an error, under the request's span.
    [failing_server] = _in(spans, FAILING_TRACE_ID, SERVER_KIND)
    tries = _in(spans, FAILING_TRACE_ID, CLIENT_KIND)
    assert len(tries) == 3  # the third failure ejects the only upstream
    for attempt in tries:
        assert attempt.parent_span_id == failing_server.span_id
        assert attempt.attributes["http.response.status_code"] == 500
        assert attempt.attributes["error.type"] == "500"
        assert attempt.status_code == ERROR_STATUS
    sent = {parent for parent in fake.traceparents[1:]}
    assert sent == {f"00-{FAILING_TRACE_ID}-{attempt.span_id}-01" for attempt in tries}


def test_nothing_is_propagated_with_tracing_off() -> None:
    with FakeUpstream(dimension=8) as fake:
        spec = f"up={fake.url}?model=fake&dimension=8"
        with Serve("--model", "none", "--upstream", spec) as gw:
            answer = httpx.post(
                f"{gw.url}/v1/embeddings",
                json={"input": "untraced"},
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                timeout=30,
            )
            assert answer.status_code == 200
    assert fake.traceparents == [None]


def _inputs(url: str, source: str) -> float:
    """``redline_gateway_inputs_total{model="fake", source=...}`` of the gateway at *url*."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "redline_gateway_inputs_total" and sample.labels == {
                "model": "fake",
                "source": source,
            }:
                return sample.value
    return 0.0


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_call_serving_several_requests_links_to_each(receiver: Receiver) -> None:
    """One upstream call batches the inputs of requests X and Y, and Z's input joined X's
    before the call started: the call's client span is in the first one's trace and links to
    the other and to Z (``redline.joined``); calls serving one request link to nothing."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    traces = {name: f"{index:032x}" for index, name in enumerate("GBXYZ", start=1)}
    with FakeUpstream(dimension=8) as fake:
        fake.script.append("slow:4")  # the first call holds the only call slot meanwhile
        spec = f"up={fake.url}?model=fake&dimension=8&concurrency=1"
        with (
            Serve("--model", "none", "--upstream", spec, "--cache-url", "none", env=env) as gw,
            ThreadPoolExecutor(5) as pool,
        ):

            def send(name: str, inputs: list[str]) -> Future[httpx.Response]:
                headers = {"traceparent": f"00-{traces[name]}-{PARENT_ID}-01"}
                body = {"input": inputs}
                url = f"{gw.url}/v1/embeddings"
                return pool.submit(httpx.post, url, json=body, headers=headers, timeout=30)

            sent = [send("G", ["gate"])]  # call 1, slow
            _until(lambda: _inputs(gw.url, "upstream") == 1, "G queued")
            time.sleep(0.2)
            sent.append(send("B", ["b"]))  # call 2: its batch waits for the slot ...
            _until(lambda: _inputs(gw.url, "upstream") == 2, "B queued")
            time.sleep(0.2)
            sent.append(send("X", ["x", "shared"]))  # ... so X's and Y's queue behind it
            sent.append(send("Y", ["y"]))
            _until(lambda: _inputs(gw.url, "upstream") == 5, "X and Y queued")
            sent.append(send("Z", ["shared"]))  # joins X's input: nothing of its own
            _until(lambda: _inputs(gw.url, "coalesced") == 1, "Z joined")
            for answer in sent:
                assert answer.result().status_code == 200, answer.result().text
            assert [len(call) for call in fake.embedding_calls] == [1, 1, 3]

            def complete(spans: list[ReceivedSpan]) -> bool:
                clients = [s for s in spans if s.kind == CLIENT_KIND]
                servers = {s.trace_id for s in spans if s.kind == SERVER_KIND}
                return len(clients) >= 3 and set(traces.values()) <= servers

            spans = receiver.wait_for(complete)

    clients = [s for s in spans if s.kind == CLIENT_KIND and s.name == "POST /v1/embeddings"]
    assert len(clients) == 3
    by_trace = {s.trace_id: s for s in clients}
    for alone in ("G", "B"):  # one request each: no link
        assert by_trace[traces[alone]].links == ()
        assert "redline.batch.requests" not in by_trace[traces[alone]].attributes
    [shared] = [s for s in clients if s.trace_id in (traces["X"], traces["Y"])]
    first = "X" if shared.trace_id == traces["X"] else "Y"
    other = "Y" if first == "X" else "X"
    assert shared.attributes["redline.batch.requests"] == 3
    linked = dict(zip(shared.links, shared.link_attributes, strict=True))
    assert {trace_id for trace_id, _ in linked} == {traces[other], traces["Z"]}
    span_ids = {(s.trace_id, s.span_id) for s in spans}
    for (trace_id, span_id), attributes in linked.items():
        assert (trace_id, span_id) in span_ids  # a span of that request (its server span)
        assert attributes.get("redline.joined", False) is (trace_id == traces["Z"])


def test_a_request_joining_a_started_call_is_linked_both_ways(receiver: Receiver) -> None:
    """Request A's call is on its way (the upstream has it) when J asks for the same input:
    J waits for A's call. The call's client span links to J's span and J's span links to the
    call, both with ``redline.joined``; the call counts two requests."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    traces = {"A": f"{10:032x}", "J": f"{11:032x}"}
    with FakeUpstream(dimension=8) as fake:
        fake.script.append("slow:2")
        spec = f"up={fake.url}?model=fake&dimension=8"
        with (
            Serve("--model", "none", "--upstream", spec, "--cache-url", "none", env=env) as gw,
            ThreadPoolExecutor(2) as pool,
        ):

            def send(name: str) -> Future[httpx.Response]:
                headers = {"traceparent": f"00-{traces[name]}-{PARENT_ID}-01"}
                body = {"input": ["late shared"]}
                url = f"{gw.url}/v1/embeddings"
                return pool.submit(httpx.post, url, json=body, headers=headers, timeout=30)

            first = send("A")
            _until(lambda: len(fake.embedding_calls) == 1, "A's call reached the upstream")
            joining = send("J")
            _until(lambda: _inputs(gw.url, "coalesced") == 1, "J joined")
            assert first.result().status_code == 200, first.result().text
            assert joining.result().status_code == 200, joining.result().text
            assert len(fake.embedding_calls) == 1

            def complete(spans: list[ReceivedSpan]) -> bool:
                servers = {s.trace_id for s in spans if s.kind == SERVER_KIND}
                clients = [s for s in spans if s.kind == CLIENT_KIND]
                return set(traces.values()) <= servers and bool(clients)

            spans = receiver.wait_for(complete)

    [call] = [s for s in spans if s.kind == CLIENT_KIND and s.name == "POST /v1/embeddings"]
    assert call.trace_id == traces["A"]
    [joiner] = _in(spans, traces["J"], SERVER_KIND)
    assert call.links == ((joiner.trace_id, joiner.span_id),)
    assert call.link_attributes[0].get("redline.joined") is True
    assert call.attributes["redline.batch.requests"] == 2
    assert joiner.links == ((call.trace_id, call.span_id),)
    assert joiner.link_attributes[0].get("redline.joined") is True
