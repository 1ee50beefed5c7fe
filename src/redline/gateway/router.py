"""A :class:`ModelRoute`: every upstream serving one model, tried in turn until one answers or
the request's deadline comes.

Round-robin over the upstreams in rotation; a retryable failure (connect error, 5xx, 429,
a timeout) counts against that upstream's ejector and the call moves at once to another
upstream in rotation, or, when there is none, retries the same one after a jittered
exponential backoff (at least its ``Retry-After``). Nothing sleeps past the deadline: when
the next try cannot start in time the call fails at once with the upstreams' states.
A 4xx other than 429 is the request's fault and is passed on without retrying.

Example::

    route = ModelRoute("bge", [tei_a, tei_b])
    reply = await route.embed(["a"], dimensions=None, deadline=time.monotonic() + 5)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from redline.exceptions import (
    GatewayError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from redline.gateway.client import CallFailed, UpstreamReply
from redline.gateway.observer import NO_OBSERVER, GatewayObserver
from redline.gateway.upstream import Upstream

__all__ = ["ModelRoute"]


class ModelRoute:
    """The upstreams serving *model* (the upstream's own model id), with failover."""

    def __init__(
        self,
        model: str,
        upstreams: Sequence[Upstream],
        *,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        timer: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        observer: GatewayObserver = NO_OBSERVER,
    ) -> None:
        if not upstreams:
            raise ValueError(f"model {model!r} needs at least one upstream")
        self.model = model
        self.upstreams = list(upstreams)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._timer = timer
        self._rng = rng if rng is not None else random.Random()
        self.observer = observer
        self._next = 0

    def states(self) -> str:
        """Every upstream's state, for error messages."""
        return "; ".join(upstream.state() for upstream in self.upstreams)

    def _pick(self, avoid: Upstream | None) -> Upstream | None:
        """The next upstream in rotation, preferring one other than *avoid*."""
        count = len(self.upstreams)
        start = self._next
        self._next = (self._next + 1) % count
        order = [self.upstreams[(start + step) % count] for step in range(count)]
        if avoid is not None and count > 1:
            order.remove(avoid)
            order.append(avoid)
        for upstream in order:
            if upstream.ejector.available():
                return upstream
        return None

    async def embed(
        self, inputs: list[str], *, dimensions: int | None, deadline: float
    ) -> UpstreamReply:
        """Embed *inputs* by the first upstream that answers before *deadline* (monotonic)."""
        attempt = 0
        last: CallFailed | None = None
        while True:
            remaining = deadline - self._timer()
            if remaining <= 0:
                raise self._give_up(last, timed_out=True)
            upstream = self._pick(avoid=None if last is None else self._last_upstream)
            if upstream is None:
                raise self._give_up(last, timed_out=False)
            self._last_upstream = upstream
            observer = self.observer
            started = self._timer()
            try:
                reply = await upstream.client.embed(
                    self.model, inputs, dimensions=dimensions, timeout=remaining
                )
            except CallFailed as exc:
                observer.upstream_call(
                    upstream.name, len(inputs), self._timer() - started, exc.kind
                )
                if not exc.retryable:
                    upstream.ejector.abandon()
                    raise UpstreamRejected(str(exc), status=exc.status) from exc
                if exc.upstream_status == 429:
                    upstream.ejector.abandon()  # busy is not broken
                else:
                    ejection = upstream.ejector.record_failure(str(exc))
                    observer.upstream_state(
                        upstream.name, ejected=upstream.ejector.out, ejection=ejection
                    )
                last = exc
                attempt += 1
                if self._has_alternative(upstream) and exc.upstream_status != 429:
                    continue
                if upstream.ejector.stats().ejected_until is not None:
                    # Every upstream is out of rotation now: answer at once rather than wait
                    # out cooldowns; the next request probes again when one ends.
                    raise self._give_up(last, timed_out=False) from exc
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay = self._rng.uniform(delay / 2, delay)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                if self._timer() + delay >= deadline:
                    raise self._give_up(last, timed_out=False) from exc
                await asyncio.sleep(delay)
                continue
            except BaseException:
                observer.upstream_call(
                    upstream.name, len(inputs), self._timer() - started, "cancelled"
                )
                upstream.ejector.abandon()
                raise
            observer.upstream_call(upstream.name, len(inputs), self._timer() - started, "ok")
            if upstream.ejector.out:  # a probe succeeded: back in rotation
                observer.upstream_state(upstream.name, ejected=False, ejection=False)
            upstream.ejector.record_success()
            return reply

    _last_upstream: Upstream | None = None

    def _has_alternative(self, failed: Upstream) -> bool:
        """True when another upstream is in rotation (without claiming a probe)."""
        return any(
            other is not failed and other.ejector.stats().ejected_until is None
            for other in self.upstreams
        )

    def _give_up(self, last: CallFailed | None, *, timed_out: bool) -> GatewayError:
        """The error for the client: what failed last and every upstream's state."""
        states = self.states()
        if timed_out:
            cause = f"; last error: {last}" if last is not None else ""
            return UpstreamTimeout(
                f"no upstream answered for model {self.model!r} within the deadline{cause} "
                f"[{states}]"
            )
        if last is None:
            return UpstreamUnavailable(
                f"every upstream serving {self.model!r} is cooling down after failures [{states}]"
            )
        error_type = UpstreamTimeout if last.status == 504 else UpstreamUnavailable
        status = last.status if last.status >= 500 else 502
        return error_type(
            f"upstreams for model {self.model!r} failed: {last} [{states}]", status=status
        )

    def __repr__(self) -> str:
        return f"ModelRoute({self.model!r}, [{self.states()}])"
