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

Per client (``REDLINE_CACHE_TENANTS``): rules ``CLIENT?namespace=NAME&allow=DIRECTIVES``, where
CLIENT is the id the usage table and access log show (``key:<hash prefix>``, ``ip:<address>``)
or ``*`` for every client without a rule of its own; ``namespace`` gives the client's cache
entries a prefix of their own (clients share entries only when they share a namespace);
``allow`` lists the directives it may send, ``+``-separated (``none``: no directive; default:
all). A directive it may not send is a 403 naming what it may.

The policy travels from the route to the cache in a context variable (set by
:func:`use_policy` for the request's task), so the cache code needs no new parameter.

Example::

    policy = parse_cache_control("no-store, max-age=60")
    policy.no_store, policy.max_age          # (True, 60.0)
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from redline.cache.base import Cache
from redline.exceptions import RedlineError
from redline.serve.errors import APIError

__all__ = [
    "DEFAULT_POLICY",
    "CacheControlError",
    "CacheControlRefused",
    "CachePolicy",
    "TenantRule",
    "TenantRules",
    "current_policy",
    "entry_ages",
    "not_cached",
    "parse_cache_control",
    "stale_keys",
    "tenant_rules",
    "use_policy",
]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What one request allows the cache to do."""

    no_cache: bool = False
    no_store: bool = False
    max_age: float | None = None
    only_if_cached: bool = False
    namespace: str | None = None

    def directives(self) -> set[str]:
        """The directives this policy was given."""
        given = {
            "no-cache": self.no_cache,
            "no-store": self.no_store,
            "max-age": self.max_age is not None,
            "only-if-cached": self.only_if_cached,
        }
        return {name for name, on in given.items() if on}

    def key_prefix(self) -> str:
        """What goes before every cache key of this request (its namespace, if any)."""
        return f"ns:{self.namespace}:" if self.namespace else ""

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


class CacheControlError(RedlineError, ValueError):
    """A ``Cache-Control`` header redline cannot honour (a bad ``max-age``)."""

    status = 400


class CacheControlRefused(CacheControlError):
    """The client sent a directive its tenant rule does not allow."""

    status = 403


DIRECTIVES = ("no-cache", "no-store", "max-age", "only-if-cached")


@dataclass(frozen=True, slots=True)
class TenantRule:
    """What one client may do with the cache."""

    namespace: str | None = None
    allow: frozenset[str] = frozenset(DIRECTIVES)


class TenantRules:
    """``client id -> TenantRule`` (``*`` for the rest); :meth:`apply` to a request's policy."""

    def __init__(self, rules: dict[str, TenantRule]) -> None:
        self.rules = rules
        self.default = rules.get("*", TenantRule())

    def apply(self, client: str, policy: CachePolicy) -> CachePolicy:
        """*policy* in the client's namespace; :class:`CacheControlRefused` if not allowed."""
        rule = self.rules.get(client, self.default)
        refused = policy.directives() - rule.allow
        if refused:
            allowed = ", ".join(sorted(rule.allow)) or "none"
            raise CacheControlRefused(
                f"client {client} may not send Cache-Control {', '.join(sorted(refused))}; "
                f"allowed: {allowed} (REDLINE_CACHE_TENANTS)"
            )
        if rule.namespace is None:
            return policy
        return CachePolicy(
            policy.no_cache, policy.no_store, policy.max_age, policy.only_if_cached, rule.namespace
        )


@functools.lru_cache(maxsize=8)
def tenant_rules(specs: tuple[str, ...]) -> TenantRules:
    """Parse ``REDLINE_CACHE_TENANTS`` rules (see the module docstring); ValueError if bad."""
    rules: dict[str, TenantRule] = {}
    for spec in specs:
        client, _, query = spec.partition("?")
        if not client or not query:
            raise ValueError(
                f"cache tenant rule must look like CLIENT?namespace=NAME, got {spec!r}"
            )
        namespace: str | None = None
        allow = frozenset(DIRECTIVES)
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == "namespace":
                if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
                    raise ValueError(
                        f"cache namespace must be 1-64 of [A-Za-z0-9_.-], got {value!r}"
                    )
                namespace = value
            elif name == "allow":
                given = set(value.split()) - {"none"}  # '+' arrives as a space
                unknown = given - set(DIRECTIVES)
                if unknown:
                    raise ValueError(
                        f"unknown Cache-Control directives {sorted(unknown)} in {spec!r}"
                    )
                allow = frozenset(given)
            else:
                raise ValueError(
                    f"cache tenant rule option must be namespace or allow, got {name!r}"
                )
        rules[client] = TenantRule(namespace, allow)
    return TenantRules(rules)


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
