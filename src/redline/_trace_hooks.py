"""Seams through which the lower layers report to tracing without importing ``serve``.

The cache package must not depend on the server, yet the server's ``cache.lookup`` span
should say which tier answered. So a cache calls :func:`cache_read` after a multi-key read;
while tracing is off (the hook is unset) that is one test of a module global. The server's
tracing (``redline.serve.tracing``) sets the hook when it starts and clears it when it stops;
the hook then annotates the current span (see ``serve.tracing`` for the attribute names).

Example (what a cache does at the end of ``get_many``)::

    _trace_hooks.cache_read(len(from_l1), len(from_l2))
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CacheRead", "cache_read", "set_cache_read"]

CacheRead = Callable[[int, int], None]
"""``hook(l1_hits, l2_hits)``: the distinct keys one read found in each tier."""

_cache_read: CacheRead | None = None


def set_cache_read(hook: CacheRead | None) -> None:
    """Install *hook* for :func:`cache_read` (None: reports cost nothing again)."""
    global _cache_read
    _cache_read = hook


def cache_read(l1_hits: int, l2_hits: int) -> None:
    """Report what one multi-key cache read found, per tier (a no-op unless tracing is on).

    A one-tier cache reports its hits as ``l1_hits`` if it lives in the process and as
    ``l2_hits`` if it is shared (Redis); a tiered cache reports after its tiers did, so its
    figures are the ones that stand.
    """
    hook = _cache_read
    if hook is not None:
        hook(l1_hits, l2_hits)
