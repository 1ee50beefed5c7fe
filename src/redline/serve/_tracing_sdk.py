"""The OpenTelemetry SDK behind ``serve.tracing`` when tracing is on; imported only then.

A private tracer provider (the global one is left to the application), configured by the
standard ``OTEL_*`` variables; the server span of every HTTP request with the HTTP semantic
convention attributes; the tiers a ``cache.lookup`` read reached (``_trace_hooks``); the batch
side (queue waits, one ``batch`` span per model batch linked to every request it served) is in
``_tracing_batches``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from redline.exceptions import ConfigError, RedlineError
from redline.serve._tracing_batches import JOINED, BatchTracer, Exemplar
from redline.serve.tracing import Served, Span

__all__ = ["SdkTracing"]

T = TypeVar("T")
R = TypeVar("R")

_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT = Context()


class SdkTracing:
    """Spans through an OpenTelemetry ``TracerProvider`` with a batching exporter."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("redline.serve")
        self.batches = BatchTracer(self.tracer)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SdkTracing:
        """Provider, sampler, resource and exporter from the ``OTEL_*`` variables."""
        attributes: dict[str, Any] = {}
        if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes["service.name"] = "redline"
        provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_*
        for exporter in _exporters(environ):
            provider.add_span_processor(BatchSpanProcessor(exporter))  # delays: OTEL_BSP_*
        return cls(provider)

    def span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        client: bool,
        served: Served | None = None,
    ) -> Span:
        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        if served is None:
            return cast(Span, _CurrentSpan(self.tracer, name, kind, attributes))
        # A call that serves several requests: linked to the others, like a batch span; open
        # while it runs, so requests that join it then are linked too (join_call).
        found = [
            Link(request, JOINED if joined else None)
            for request, joined in served.links
            if isinstance(request, trace.SpanContext)
        ]
        if found:
            attributes = {**(attributes or {}), "redline.batch.requests": len(found) + 1}
        return cast(Span, _CurrentSpan(self.tracer, name, kind, attributes, found, served))

    def request_link(self) -> object | None:
        request = trace.get_current_span().get_span_context()
        return request if request.trace_flags.sampled else None

    def join_call(self, served: Served) -> None:
        current = trace.get_current_span()
        request = current.get_span_context()
        if not request.trace_flags.sampled or any(r == request for r, _ in served.links):
            return
        served.links.append((request, True))  # a later try links to it when it starts
        for call in served.calls:
            if call.is_recording():  # not ended
                call.add_link(request, JOINED)
                call.set_attribute("redline.batch.requests", len(served.links) + 1)
                current.add_link(call.get_span_context(), JOINED)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        _PROPAGATOR.inject(headers)

    def enqueue(self, inputs: int) -> object:
        return self.batches.enqueue(inputs)

    def leave_queue(self, jobs: Iterable[Any]) -> None:
        self.batches.leave_queue(jobs)

    def join(self, running: Any, duplicate: Any) -> None:
        self.batches.join(running, duplicate)

    def traced_batches(self, fn: Callable[[list[T]], R]) -> Callable[[list[T]], R]:
        return self.batches.traced_batches(fn)

    def batch_exemplars(
        self, items: Sequence[Any]
    ) -> tuple[Exemplar | None, list[Exemplar | None]]:
        return self.batches.batch_exemplars(items)

    def cache_read(self, l1_hits: int, l2_hits: int) -> None:
        span = trace.get_current_span()
        if getattr(span, "name", None) != "cache.lookup" or not span.is_recording():
            return  # a read outside a lookup span (the gateway's, a user's): not ours to tell
        keys = getattr(span, "attributes", {}).get("redline.cache.keys")
        found = l1_hits + l2_hits
        attributes: dict[str, Any] = {
            "redline.cache.tier": "l2" if l2_hits else "l1" if l1_hits else "miss",
            "redline.cache.l1_hits": l1_hits,
            "redline.cache.l2_hits": l2_hits,
        }
        if isinstance(keys, int):
            attributes["redline.cache.misses"] = max(keys - found, 0)
            attributes["redline.cache.result"] = (
                "miss" if not found else "hit" if found >= keys else "partial"
            )
        span.set_attributes(attributes)

    def exemplar(self) -> dict[str, str] | None:
        current = trace.get_current_span().get_span_context()
        if not current.trace_flags.sampled:
            return None
        return {"trace_id": f"{current.trace_id:032x}", "span_id": f"{current.span_id:016x}"}

    def wrap_server(self, app: ASGIApp) -> ASGIApp:
        return _ServerSpans(app, self.tracer)

    def shutdown(self) -> None:
        self.provider.shutdown()


class _CurrentSpan:
    """A span that is the current one inside ``with`` (entered as the span itself); lighter
    than the SDK's generator-based ``start_as_current_span``."""

    __slots__ = ("attributes", "kind", "links", "name", "served", "span", "token", "tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        links: Sequence[Link] | None = None,
        served: Served | None = None,
    ) -> None:
        self.tracer, self.name, self.kind, self.attributes = tracer, name, kind, attributes
        self.links = links or None
        self.served = served

    def __enter__(self) -> trace.Span:
        span = self.tracer.start_span(
            self.name, kind=self.kind, attributes=self.attributes, links=self.links
        )
        self.span = span
        self.token = otel_context.attach(trace.set_span_in_context(span))
        if self.served is not None:
            self.served.calls.append(span)
        return span

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        otel_context.detach(self.token)
        if self.served is not None:
            self.served.calls.remove(span)
        if exc is not None:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        span.end()


class _ServerSpans:
    """ASGI middleware: the server span of each HTTP request, parented by its ``traceparent``."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        user_agent = None
        for name, value in scope.get("headers") or ():
            if name in (b"traceparent", b"tracestate"):
                carrier[name.decode()] = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier) if carrier else _ROOT
        method = scope["method"]
        span = self.tracer.start_span(
            method if method in _METHODS else "HTTP",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, method, user_agent),
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is not None:
                span.update_name(f"{method if method in _METHODS else 'HTTP'} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(StatusCode.ERROR)
            otel_context.detach(token)
            span.end()


def _request_attributes(scope: Scope, method: str, user_agent: str | None) -> dict[str, Any]:
    """The HTTP semantic-convention attributes known when the request arrives."""
    attributes: dict[str, Any] = {
        "http.request.method": method if method in _METHODS else "_OTHER",
        "url.path": scope.get("path", ""),
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if method not in _METHODS:
        attributes["http.request.method_original"] = method
    query = scope.get("query_string")
    if query:
        attributes["url.query"] = query.decode("latin-1")
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"], attributes["client.port"] = client[0], client[1]
    if user_agent is not None:
        attributes["user_agent.original"] = user_agent
    return attributes


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    """``OTEL_TRACES_EXPORTER`` (default ``otlp``): ``otlp`` over HTTP/protobuf, ``console``."""
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter(environ))
        elif name != "none":
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={name!r} is not supported; use otlp, console or none"
            )
    return exporters


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() != "http/protobuf":
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported; use http/protobuf "
            "(OTEL_EXPORTER_OTLP_PROTOCOL)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RedlineError("tracing needs the OTLP exporter: pip install 'redline[otel]'") from exc
    return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_[TRACES_]*
