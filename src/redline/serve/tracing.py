"""OpenTelemetry tracing hooks for the server: off by default, and then every hook is a no-op
that costs one test of a module global (OpenTelemetry's SDK is not even imported).

Tracing is on in a process whose environment sets ``OTEL_TRACES_EXPORTER`` (``otlp`` or
``console``; ``none`` keeps it off) or ``OTEL_EXPORTER_OTLP_ENDPOINT``; the standard ``OTEL_*``
variables configure the rest (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``OTEL_BSP_*``); spans go
out as OTLP over HTTP/protobuf. ``OTEL_SDK_DISABLED=true`` keeps it off. Needs the ``otel``
extra (``pip install 'redline[otel]'``). An incoming W3C ``traceparent`` is honoured.

The app's lifespan calls :func:`install_from_env` and :func:`uninstall`; code on the request
path only uses the hooks below. The cache reports the tiers a read reached through
``redline._trace_hooks`` (it may not import the server), set here while tracing is on.

Spans and their attributes (beside the HTTP semantic conventions of the server span):

* ``cache.lookup``: ``redline.cache.keys`` (distinct keys looked up), ``redline.cache.hits``
  (entries used), ``redline.cache.misses``, ``redline.cache.result`` (``hit``, ``miss`` or
  ``partial``), ``redline.cache.tier`` (``l1``: every key found came from the in-process tier;
  ``l2``: some came from the shared tier, Redis; ``miss``: none was found), and
  ``redline.cache.l1_hits`` / ``redline.cache.l2_hits`` (keys found in each tier; a one-tier
  ``memory://`` cache counts as L1, a one-tier Redis as L2);
* ``queue.wait`` (``redline.inputs``): until the request's last input starts, with a link to
  each batch that ran its inputs;
* ``batch`` (``redline.batch.size``, ``redline.batch.requests``): a trace of its own, with one
  link to every request it served; a request whose input joined an identical one already in
  flight (computed once) is linked too, with ``redline.joined`` set on its link;
* ``model.forward`` (``redline.model``) under its batch; ``auth``; ``usage.write``;
* the gateway's upstream calls: client spans (HTTP semantic conventions) under the request that
  queued the call's first input; a call that serves several requests (their inputs batched
  into it) links to each of the others, like a batch span, with ``redline.joined`` on the link
  to a request whose input only joined one the call sends, and ``redline.batch.requests``
  counts them all (see :func:`request_link` and :func:`serving`); a request that joins an input
  of a call already on its way is linked from that call's open span, and its own span links to
  the call, both with ``redline.joined`` (see :func:`join_call`).

Example::

    with tracing.span("cache.lookup", {"redline.cache.keys": 3}) as span:
        found = await cache.get_many(keys)
        span.set_attribute("redline.cache.hits", len(found))

    # an outgoing call (the gateway's upstream requests): a client span, context propagated
    with tracing.client_span("POST", {"server.address": host}) as span:
        headers: dict[str, str] = {}
        tracing.inject(headers)            # adds traceparent (and tracestate)
        response = await client.post(url, headers=headers)
        span.set_attribute("http.response.status_code", response.status_code)
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from redline import _trace_hooks
from redline.exceptions import RedlineError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = [
    "Exemplar",
    "Served",
    "Span",
    "batch_exemplars",
    "client_span",
    "duplicates",
    "enabled_by_env",
    "enqueue",
    "exemplar",
    "inject",
    "install_from_env",
    "is_enabled",
    "join_call",
    "leave_queue",
    "request_link",
    "serving",
    "span",
    "traced",
    "traced_batches",
    "uninstall",
    "wrap_server",
]

P = ParamSpec("P")
Exemplar = dict[str, str]
"""``{"trace_id": ..., "span_id": ...}``: a span, as a Prometheus exemplar's labels."""
R = TypeVar("R")
T = TypeVar("T")


class Span(Protocol):
    """What a hook may do with the span it opened (a no-op when tracing is off)."""

    def __enter__(self) -> Span: ...
    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def set_attribute(self, key: str, value: Any) -> None: ...
    def is_recording(self) -> bool: ...


class _Traced(Protocol):
    """A job submitted to the batcher: ``trace`` is what :func:`enqueue` gave it."""

    @property
    def trace(self) -> object: ...


class Backend(Protocol):
    """What a tracing backend implements (``serve._tracing_sdk.SdkTracing``)."""

    def span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        client: bool,
        served: Served | None = None,
    ) -> Span: ...
    def request_link(self) -> object | None: ...
    def join_call(self, served: Served) -> None: ...
    def inject(self, headers: MutableMapping[str, str]) -> None: ...
    def enqueue(self, inputs: int) -> object: ...
    def leave_queue(self, jobs: Iterable[_Traced]) -> None: ...
    def traced_batches(self, fn: Callable[[list[T]], R]) -> Callable[[list[T]], R]: ...
    def join(self, running: Any, duplicate: Any) -> None: ...
    def batch_exemplars(
        self, items: Sequence[Any]
    ) -> tuple[Exemplar | None, list[Exemplar | None]]: ...
    def cache_read(self, l1_hits: int, l2_hits: int) -> None: ...
    def exemplar(self) -> dict[str, str] | None: ...
    def wrap_server(self, app: ASGIApp) -> ASGIApp: ...
    def shutdown(self) -> None: ...


class _NoSpan:
    """The span of every hook while tracing is off."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def is_recording(self) -> bool:
        return False


_NO_SPAN = _NoSpan()


class Served:
    """The requests that the outgoing calls made in one context serve beside the one whose
    context it is (:func:`serving` makes it, :func:`join_call` adds to it), and the spans of
    those calls open now; what the links and spans are is the backend's business."""

    __slots__ = ("calls", "links")

    def __init__(self, links: Sequence[tuple[object, bool]]) -> None:
        self.links = list(links)  # (request_link(), joined)
        self.calls: list[Any] = []

    def __repr__(self) -> str:
        return f"Served(links={len(self.links)}, open_calls={len(self.calls)})"


#: The other requests the outgoing calls made in this context serve (see :func:`serving`).
_SERVED: contextvars.ContextVar[Served | None] = contextvars.ContextVar(
    "redline_served_requests", default=None
)
_backend: Backend | None = None  # the process's tracer: OpenTelemetry's state is per process too


def enabled_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether *environ* (default ``os.environ``) turns tracing on."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def install_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Start tracing if *environ* asks for it (imports the SDK only then); True if on.

    Raises ``ConfigError`` for an exporter or protocol this server cannot use, and
    ``RedlineError`` naming the extra when the OpenTelemetry SDK is not installed.
    """
    global _backend
    env = dict(os.environ if environ is None else environ)
    if _backend is not None or not enabled_by_env(env):
        return _backend is not None
    try:
        from redline.serve._tracing_sdk import SdkTracing
    except ImportError as exc:
        raise RedlineError(
            f"tracing is on (OTEL_* variables) but OpenTelemetry is missing ({exc}): "
            "pip install 'redline[otel]'"
        ) from exc
    install(SdkTracing.from_env(env))
    return True


def install(backend: Backend | None) -> None:
    """Use *backend* for every hook (None: off); tests install one with an in-memory exporter."""
    global _backend
    _backend = backend
    _trace_hooks.set_cache_read(None if backend is None else backend.cache_read)


def uninstall() -> None:
    """Flush the spans not yet exported and turn tracing off."""
    global _backend
    backend, _backend = _backend, None
    _trace_hooks.set_cache_read(None)
    if backend is not None:
        backend.shutdown()


def is_enabled() -> bool:
    """Whether tracing is on in this process."""
    return _backend is not None


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Span:
    """An internal span, child of the current one, as a context manager."""
    backend = _backend
    return _NO_SPAN if backend is None else backend.span(name, attributes, False)


def client_span(name: str, attributes: Mapping[str, Any] | None = None) -> Span:
    """A client span (kind CLIENT) for an outgoing call; call :func:`inject` inside it."""
    backend = _backend
    return _NO_SPAN if backend is None else backend.span(name, attributes, True, _SERVED.get())


def request_link() -> object | None:
    """The current request's span, for a call made in another request's context that serves
    this one too (give it to :func:`serving`); None while tracing is off or not sampled."""
    backend = _backend
    return None if backend is None else backend.request_link()


def serving(links: Sequence[tuple[object, bool]]) -> Served:
    """The client spans opened from now on in this context also serve the requests of
    *links* (``(request_link(), joined)`` pairs): each span links to every one, with
    ``redline.joined`` on the link when *joined* (the request's input only joined one the
    call sends). Call it in the context the calls run in (a task's own copy); give what it
    returns to :func:`join_call` for the requests that join once the calls are on their way."""
    served = Served(links)
    _SERVED.set(served)
    return served


def join_call(served: Served) -> None:
    """The current request waits for an input that the calls of *served* (see :func:`serving`)
    already send: the call span open now links to the request's span and the request's span
    links to it, both with ``redline.joined``, and a later try of the call links to the
    request when it starts. Call it in the joining request's context."""
    backend = _backend
    if backend is not None:
        backend.join_call(served)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's W3C ``traceparent`` (and ``tracestate``) to *headers*."""
    backend = _backend
    if backend is not None:
        backend.inject(headers)


def traced(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async function so each call runs in a span called *name*.

    While tracing is off a call costs one more coroutine (about 0.2 µs): the wrapper has to be
    a coroutine function itself (FastAPI and ``inspect`` look for one, and Python 3.11 cannot
    mark a plain function as one); a ``with span(name):`` in the body costs more than that."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            backend = _backend
            if backend is None:
                return await fn(*args, **kwargs)
            with backend.span(name, None, False):
                return await fn(*args, **kwargs)

        return call

    return decorate


def enqueue(inputs: int) -> object:
    """What the *inputs* jobs of one request carry through the batch queue: the request's span
    context and its ``queue.wait`` span, which ends when the last of them starts (None when
    tracing is off)."""
    backend = _backend
    return None if backend is None else backend.enqueue(inputs)


def leave_queue(jobs: Iterable[_Traced]) -> None:
    """End the ``queue.wait`` spans of *jobs* whose batch never started (failed, deduplicated)."""
    backend = _backend
    if backend is not None:
        backend.leave_queue(jobs)


def traced_batches(fn: Callable[[list[T]], R]) -> Callable[[list[T]], R]:
    """Wrap a sync batch function so each batch gets one ``batch`` span linked to the request
    spans of its jobs (``job.trace`` from :func:`enqueue`); *fn* itself when tracing is off."""
    backend = _backend
    return fn if backend is None else backend.traced_batches(fn)


def duplicates() -> Callable[[Any, Any], None] | None:
    """The batcher's ``on_duplicate`` hook while tracing is on (None when off): the request of
    a job that joined an identical one in flight gets a link from the batch that computes it
    (``redline.joined`` on the link), whether that batch had started or not."""
    backend = _backend
    return None if backend is None else backend.join


def batch_exemplars(items: Sequence[_Traced]) -> tuple[Exemplar | None, list[Exemplar | None]]:
    """Exemplars for one batch's histograms: the ``batch`` span that ran *items* and each
    item's ``queue.wait`` span (None where untraced); ``(None, [])`` when tracing is off."""
    backend = _backend
    return (None, []) if backend is None else backend.batch_exemplars(items)


def exemplar() -> dict[str, str] | None:
    """``{"trace_id": ..., "span_id": ...}`` of the current sampled span, for a Prometheus
    exemplar; None when tracing is off or nothing is sampled."""
    backend = _backend
    return None if backend is None else backend.exemplar()


def wrap_server(app: ASGIApp) -> ASGIApp:
    """*app* inside a middleware that opens the server span of every HTTP request."""
    backend = _backend
    return app if backend is None else backend.wrap_server(app)
