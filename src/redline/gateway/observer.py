"""What the gateway reports as it works (the server turns it into Prometheus series, see
``redline.serve.metrics.GatewayMetrics``): every upstream call, ejections, and where each
requested input came from. :data:`NO_OBSERVER` ignores everything (the default).

Example::

    class Printing:
        def upstream_call(self, upstream, inputs, seconds, result):
            print(upstream, inputs, f"{seconds * 1000:.1f} ms", result)

        def upstream_state(self, upstream, *, ejected, ejection):
            print(upstream, "ejected" if ejected else "in rotation")

        def inputs(self, model, *, cached, coalesced, sent):
            print(model, cached, coalesced, sent)

    gateway = await Gateway.open(specs, cache=cache, observer=Printing())
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_OBSERVER", "RESULTS", "GatewayObserver"]

RESULTS = (
    "ok",
    "timeout",
    "connect",
    "http_429",
    "http_4xx",
    "http_5xx",
    "invalid_response",
    "cancelled",
)
"""The ``result`` of one upstream call: success, or the kind of its failure."""


class GatewayObserver(Protocol):
    """Hooks called on the event loop; each must be cheap and must not raise."""

    def upstream_call(self, upstream: str, inputs: int, seconds: float, result: str) -> None:
        """One call to *upstream* with *inputs* inputs took *seconds*; *result* is one of
        :data:`RESULTS`."""
        ...

    def upstream_state(self, upstream: str, *, ejected: bool, ejection: bool) -> None:
        """After a call: whether *upstream* is out of rotation, and whether this call's
        failure is what took it out (*ejection*)."""
        ...

    def inputs(self, model: str, *, cached: int, coalesced: int, sent: int) -> None:
        """One request's inputs for upstream model *model*: served from the cache, joined to
        an identical input already in flight (or repeated within the request), queued for an
        upstream call; the three add up to the request's inputs."""
        ...


class _NoObserver:
    """Ignores every report."""

    __slots__ = ()

    def upstream_call(self, upstream: str, inputs: int, seconds: float, result: str) -> None:
        return None

    def upstream_state(self, upstream: str, *, ejected: bool, ejection: bool) -> None:
        return None

    def inputs(self, model: str, *, cached: int, coalesced: int, sent: int) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_OBSERVER"


NO_OBSERVER: GatewayObserver = _NoObserver()
