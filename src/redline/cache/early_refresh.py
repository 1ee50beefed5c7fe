"""Probabilistic early refresh (XFetch) so a hot key is recomputed before it expires.

The value is stored in an envelope with ``delta`` (how long the last recompute took) and
``expires_at`` (wall-clock time of logical expiry). Each read recomputes early when::

    now - delta * beta * log(rand()) >= expires_at        # rand() in (0, 1]

so the chance grows as expiry nears, and grows earlier for slow recomputes. *beta* > 1
favours earlier refresh, < 1 later. ``delta`` and ``expires_at`` are absolute wall-clock
values, so every process reading the shared cache agrees on them. Combined with
single-flight (and a lock across processes), ONE caller refreshes while the rest keep
reading the old value — stale-while-revalidate without a thundering herd at expiry.
(Vattani, Chierichetti, Lowenstein: "Optimal Probabilistic Cache Stampede Prevention".)

Example::

    envelope = wrap(value, delta=0.2, expires_at=time.time() + 60)
    if should_refresh(unwrap(envelope), now=time.time(), beta=1.0, rand=random.random()):
        ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MARK", "Envelope", "should_refresh", "unwrap", "wrap"]

#: The key of redline's stored forms (``{"__redline__": kind, ...}``: this envelope, the
#: negative-cache marker of :mod:`redline.cache.strategies`); no plain value should use it.
MARK = "__redline__"
_KIND = "xfetch"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A cached value with its recompute time and logical expiry (seconds, wall clock)."""

    value: Any
    delta: float
    expires_at: float


def wrap(value: Any, *, delta: float, expires_at: float) -> dict[str, Any]:
    """The JSON-friendly form of an :class:`Envelope`, as stored in the cache."""
    return {MARK: _KIND, "value": value, "delta": delta, "expires_at": expires_at}


def unwrap(raw: Any) -> Envelope | None:
    """The :class:`Envelope` stored as *raw*, or ``None`` if *raw* is not one."""
    if isinstance(raw, dict) and raw.get(MARK) == _KIND:
        return Envelope(raw["value"], float(raw["delta"]), float(raw["expires_at"]))
    return None


def should_refresh(envelope: Envelope, *, now: float, beta: float, rand: float) -> bool:
    """The XFetch test: recompute now? *rand* is uniform in (0, 1] (0 is treated as tiny)."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    gap = envelope.delta * beta * -math.log(max(rand, 1e-300))
    return now + gap >= envelope.expires_at
