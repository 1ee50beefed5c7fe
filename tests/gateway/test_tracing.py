"""Every upstream call of a real gateway process is a client span in the request's trace, and
its ``traceparent`` goes out to the upstream; with tracing off nothing is sent."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

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
