"""``@cached``: cache the results of an async function in any :class:`~redline.cache.base.Cache`.

>>> l1 = MemoryCache(max_entries=10_000)
>>> @cached(l1, ttl=300)
... async def embed(text: str) -> list[float]:
...     return await model.encode(text)
>>> await embed("hello")          # computed, then served from the cache
>>> await embed.invalidate("hello")
>>> embed.key("hello")
'redline:app.embed:1:3f0c...'

Keys are ``"{namespace}:{module}.{qualname}:{version}:{digest}"`` with the digest of the
canonically encoded, signature-bound arguments (:func:`redline.cache.keys.make_key`), so they
are stable across processes; bump ``version`` to drop every old entry. With ``key=``, your
function builds the last part instead: ``"{namespace}:{module}.{qualname}:{version}:{yours}"``.

``None`` results are cached like any value. The TTL gets +/-``jitter`` (10% by default) so
entries written together do not expire together. Arguments without a canonical encoding
(``self`` of a method, open files, clients...) raise ``TypeError``: pass ``key=`` to say
what identifies the call.

Every call takes one path, whatever the options: a synchronous peek at the in-process tier
(the fast path), and on a miss :class:`~redline.cache.strategies.CacheAside` (the one miss
path): read the slower tiers, else run the body once for all concurrent callers and store
what it returns. So every combination of options behaves alike: concurrent misses of a key
run the body once (``single_flight=False``: once per caller, unless ``lock=`` makes them
wait for one another); an error of the body reaches every caller sharing that run and is
not cached; a cancelled caller does not cancel the run the others wait for (the run is
cancelled when all its callers are); a body that returns ``MISSING`` ("no such thing") is
not stored, unless ``negative_ttl=`` says how long to remember it. A cache that is down or
cannot encode the value never breaks the call: reads fall back to computing, writes are
skipped, and the failures are counted in ``fn.events`` and logged once per cause when they
start and once when they stop (``ok``, with how many there were), not once per call.

The hit path is built for speed: a bounded memo maps raw argument tuples of plain
``str``/``int``/``bytes``/``None`` values to their key (skipping binding and hashing), and a
cache with a synchronous peek (:class:`~redline.cache.abilities.SyncPeek`: a
:class:`~redline.cache.memory.MemoryCache`, or a :class:`~redline.cache.tiered.TieredCache`
over one) is read with no extra coroutine. Stored forms (``{"__redline__": ...}``: negative
markers, early-refresh envelopes) are decoded on the miss path.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Protocol, TypeVar, cast

from redline.cache.base import MISSING, Cache
from redline.cache.early_refresh import MARK
from redline.cache.keys import make_key

if TYPE_CHECKING:
    from redline._events import EventLog
    from redline.cache.strategies import BloomOption, CacheAsideStats, LockOption

__all__ = ["CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_MEMO_SAFE: Final = frozenset({str, int, bytes, type(None)})
_MEMO_SIZE: Final = 4096


def _no_peek(key: str, default: Any) -> Any:
    """The peek of a cache without an in-process tier: always a miss."""
    return default


class CachedFunction(Protocol[P, R_co]):
    """What :func:`cached` returns: the function, plus ``key``, ``invalidate``, ``cache``,
    ``events`` (cache failures seen by its miss path) and ``stats`` (of its miss path)."""

    cache: Cache
    events: EventLog

    def stats(self) -> CacheAsideStats:
        """Counters of the calls that missed the in-process tier (hits there are not counted)."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The full cache key of this call."""
        ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the cached result of this call; whether there was one."""
        ...


def cached(
    cache: Cache,
    *,
    ttl: float | None = None,
    key: Callable[..., str] | None = None,
    jitter: float = 0.1,
    version: str | int = 1,
    namespace: str = "redline",
    single_flight: bool = True,
    lock: LockOption = None,
    bloom: BloomOption = None,
    negative_ttl: float | None = None,
    early_refresh: float | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """Cache an ``async def`` function's results in *cache*; see the module docstring.

    Parameters: ``ttl`` seconds (``None``: the cache's default), ``key`` builds the variable
    part of the key from the call's arguments, ``jitter`` is the TTL spread (a fraction),
    ``version`` and ``namespace`` prefix every key, ``single_flight`` dedupes concurrent misses.

    The protections of :func:`redline.cache.strategies.cache_aside` are options of the same
    path (they change what is stored and what a miss does, not which path a call takes):
    ``lock=True`` (single-flight across processes with a Redis lock), ``bloom=`` (a filter of
    the call keys that can exist — fill it with ``fn.key(...)``; a call whose key is not in it
    returns ``MISSING`` without running the body), ``negative_ttl=`` (a body that returns
    ``MISSING`` means "no such thing", remembered that long) and ``early_refresh=`` (XFetch:
    a hot key is recomputed before it expires; needs a ``ttl``).
    """
    if not isinstance(cache, Cache):
        raise TypeError(f"cached() needs a Cache, got {type(cache).__name__}")
    if ttl is not None and ttl <= 0:
        raise ValueError(f"ttl must be > 0 or None, got {ttl}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be >= 0 and < 1, got {jitter}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable returning str, got {type(key).__name__}")

    def decorate(func: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        name = getattr(func, "__qualname__", repr(func))
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"cached() needs an async function; got sync function {name!r}. "
                "Make it `async def` (run blocking work with asyncio.to_thread inside it)."
            )
        qualname = f"{func.__module__}.{name}"
        prefix = f"{namespace}:{qualname}:{version}:"
        signature = inspect.signature(func)
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = signature.parameters.values()
        arity = len(params) if all(p.kind in plain for p in params) else -1
        # The one miss path; its options are checked now, not at the first call.
        from redline.cache.strategies import CacheAside

        aside = CacheAside(
            cache,
            ttl=ttl,
            jitter=jitter,
            single_flight=single_flight,
            lock=lock,
            bloom=bloom,
            negative_ttl=negative_ttl,
            early_refresh=early_refresh,
            name=f"@cached {qualname}",
        )
        aside.check()
        peek = aside.peek or _no_peek
        after_peek = aside.after_peek
        memo: OrderedDict[Any, str] = OrderedDict()

        def build_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if key is not None:
                custom = key(*args, **kwargs)
                if not isinstance(custom, str):
                    raise TypeError(
                        f"key= of {qualname} must return str, got {type(custom).__name__}"
                    )
                return prefix + custom
            # Every parameter given positionally: binding would change nothing, so skip it.
            bind = None if not kwargs and len(args) == arity else signature
            return make_key(
                qualname, args, kwargs, namespace=namespace, version=version, signature=bind
            )

        def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            if key is not None:
                return build_key(args, kwargs)
            for arg in args:
                if type(arg) not in _MEMO_SAFE:
                    return build_key(args, kwargs)
            if kwargs:
                for arg in kwargs.values():
                    if type(arg) not in _MEMO_SAFE:
                        return build_key(args, kwargs)
                memo_key: Any = (args, tuple(kwargs.items()))
            else:
                memo_key = args
            found = memo.get(memo_key)
            if found is None:
                found = build_key(args, kwargs)
                if len(memo) >= _MEMO_SIZE:
                    # OrderedDict: O(1). next(iter(dict)) after many front deletions is
                    # O(deleted slots) and made memo churn cost microseconds per call.
                    memo.popitem(last=False)
                memo[memo_key] = found
            return found

        memo_get = memo.get
        # With key=, the memo is never filled: no argument type is memo-safe.
        safe: frozenset[object] = _MEMO_SAFE if key is None else frozenset()
        mark = MARK

        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # This is the hot path: key_of() inlined for the common all-positional call, the
            # in-process tier peeked synchronously, no cast() (a call) on the way out.
            cache_key: str | None = None
            if not kwargs:
                for arg in args:
                    if type(arg) not in safe:
                        break
                else:
                    cache_key = memo_get(args)
            if cache_key is None:
                cache_key = key_of(args, kwargs)
            value: Any = peek(cache_key, MISSING)
            if value is not MISSING and (value.__class__ is not dict or mark not in value):
                hit: R = value  # a plain value, not a stored form (negative marker, envelope)
                return hit
            loaded: R = await after_peek(cache_key, value, functools.partial(func, *args, **kwargs))
            return loaded

        def key_method(*args: P.args, **kwargs: P.kwargs) -> str:
            return key_of(args, kwargs)

        async def invalidate(*args: P.args, **kwargs: P.kwargs) -> bool:
            return await cache.delete(key_of(args, kwargs))

        functools.update_wrapper(wrapper, func)
        wrapped = cast(Any, wrapper)
        wrapped.key = key_method
        wrapped.invalidate = invalidate
        wrapped.cache = cache
        wrapped.events = aside.events
        wrapped.stats = aside.stats
        return cast(CachedFunction[P, R], wrapper)

    return decorate
