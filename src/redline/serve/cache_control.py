"""Per-request cache control: the request's ``Cache-Control`` header as a :class:`CachePolicy`,
honoured by the embedding cache for local and upstream models alike.

==================  ==========================================================================
directive           effect
==================  ==========================================================================
``no-cache``        compute every input fresh, then store it (``X-Cache: refresh``)
``no-store``        write nothing to the cache (``X-Cache: bypass`` when something was computed)
``max-age=N``       accept an entry only if it was stored less than N seconds ago (older ones
                    are recomputed and stored again); the response carries ``Age``, the age
                    in seconds of the oldest entry it used (the cache's TTL must be on)
``only-if-cached``  answer from the cache only: a request with any miss gets a 504
==================  ==========================================================================

Unknown directives are ignored (as HTTP caches do); a malformed ``max-age`` is a 400.

The policy travels from the route to the cache in a context variable (set by
:func:`use_policy` for the request's task), so the cache code needs no new parameter.

Example::

    policy = parse_cache_control("no-store, max-age=60")
    policy.no_store, policy.max_age          # (True, 60.0)
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redline.cache.base import Cache
from redline.serve.errors import APIError

__all__ = [
    "DEFAULT_POLICY",
    "CacheControlError",
    "CachePolicy",
    "current_policy",
    "entry_ages",
    "not_cached",
    "parse_cache_control",
    "stale_keys",
    "use_policy",
]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What one request allows the cache to do."""

    no_cache: bool = False
    no_store: bool = False
    max_age: float | None = None
    only_if_cached: bool = False

    @property
    def reads(self) -> bool:
        """Whether entries may be served at all."""
        return not self.no_cache

    def result(self, hits: int, misses: int) -> str:
        """The ``X-Cache`` value for a request with *hits* served and *misses* computed."""
        if self.no_cache:
            return "bypass" if self.no_store else "refresh"
        if misses and self.no_store:
            return "bypass"
        return "hit" if not misses else ("miss" if hits == 0 else "partial")


DEFAULT_POLICY = CachePolicy()

_POLICY: contextvars.ContextVar[CachePolicy] = contextvars.ContextVar(
    "redline_cache_policy", default=DEFAULT_POLICY
)


class CacheControlError(ValueError):
    """A ``Cache-Control`` header redline cannot honour (a bad ``max-age``)."""


def parse_cache_control(value: str | None) -> CachePolicy:
    """The policy of a ``Cache-Control`` header value (None or empty: the default)."""
    if not value:
        return DEFAULT_POLICY
    no_cache = no_store = only_if_cached = False
    max_age: float | None = None
    for part in value.split(","):
        name, _, argument = part.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "only-if-cached":
            only_if_cached = True
        elif name == "max-age":
            try:
                max_age = float(argument.strip().strip('"'))
            except ValueError:
                raise CacheControlError(
                    f"Cache-Control max-age must be a number of seconds, got {argument!r}"
                ) from None
            if max_age < 0:
                raise CacheControlError(f"Cache-Control max-age must be >= 0, got {argument!r}")
    if no_cache and only_if_cached:
        raise CacheControlError("Cache-Control no-cache and only-if-cached contradict each other")
    return CachePolicy(no_cache, no_store, max_age, only_if_cached)


def use_policy(policy: CachePolicy) -> None:
    """Make *policy* the current request's (the context of the request's task)."""
    _POLICY.set(policy)


def current_policy() -> CachePolicy:
    """The current request's policy (the default outside a request)."""
    return _POLICY.get()


async def entry_ages(cache: Cache, keys: Iterable[str], ttl: float | None) -> dict[str, float]:
    """Seconds since each key was stored, from its remaining TTL (keys without one: absent)."""
    if not ttl:
        return {}
    ages: dict[str, float] = {}
    for key in keys:
        remaining: Any = await cache.ttl(key)
        if remaining is not None:
            ages[key] = max(0.0, ttl - float(remaining))
    return ages


def not_cached(missing: int, total: int) -> APIError:
    """The 504 of an ``only-if-cached`` request with *missing* of *total* inputs not cached."""
    return APIError(
        504,
        f"Cache-Control: only-if-cached, but {missing} of {total} inputs are not cached",
        code="not_cached",
    )


def stale_keys(found: Iterable[str], ages: dict[str, float], max_age: float) -> set[str]:
    """Keys older than *max_age* (or of unknown age: no TTL to tell it by)."""
    return {key for key in found if ages.get(key, float("inf")) > max_age}
