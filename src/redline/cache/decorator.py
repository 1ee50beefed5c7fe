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
entries written together do not expire together. Concurrent misses of one key run the body
once (in-process single-flight). A cache that is down or cannot encode the value never
breaks the call: reads fall back to computing, failed writes are logged. Arguments without
a canonical encoding (``self`` of a method, open files, clients...) raise ``TypeError``:
pass ``key=`` to say what identifies the call.

The hit path is built for speed: a bounded memo maps raw argument tuples of plain
``str``/``int``/``bytes``/``None`` values to their key (skipping binding and hashing), and a
:class:`~redline.cache.memory.MemoryCache` (or a :class:`~redline.cache.tiered.TieredCache`
over one) is read synchronously, with no extra coroutine.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, ParamSpec, Protocol, TypeVar, cast

from redline.cache.base import MISSING, Cache
from redline.cache.keys import make_key
from redline.cache.memory import MemoryCache
from redline.cache.singleflight import SingleFlight
from redline.exceptions import CacheError

if TYPE_CHECKING:
    from redline.cache.strategies import BloomOption, LockOption

__all__ = ["CachedFunction", "cached"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_MEMO_SAFE: Final = frozenset({str, int, bytes, type(None)})
_MEMO_SIZE: Final = 4096


class CachedFunction(Protocol[P, R_co]):
    """What :func:`cached` returns: the function, plus ``key``, ``invalidate`` and ``cache``."""

    cache: Cache

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]: ...

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The full cache key of this call."""
        ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the cached result of this call; whether there was one."""
        ...


class _Loader(Generic[R]):
    """The miss path of one decorated function: read the slow tiers, else compute and store."""

    def __init__(
        self,
        func: Callable[..., Awaitable[R]],
        cache: Cache,
        *,
        ttl: float | None,
        jitter: float,
        single_flight: bool,
        l1_authoritative: bool,
    ) -> None:
        self.func = func
        self.cache = cache
        self.ttl = ttl
        self.jitter = jitter
        self.flight = SingleFlight() if single_flight else None
        # After a MemoryCache miss there is nothing else to read; after a TieredCache L1
        # miss only its L2 is left; otherwise the whole cache is read on the miss path.
        self._read: Callable[[str], Awaitable[Any]] | None
        if l1_authoritative:
            self._read = None
        else:
            self._read = getattr(cache, "get_below_l1", None) or cache.get

    async def load(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """The value of ``func(*args, **kwargs)`` whose L1 lookup missed."""
        # Read the slower tiers before entering single-flight: a hit (the common case on a
        # shared Redis) then costs one coalesced read and no task or shield.
        if self._read is not None:
            try:
                value = await self._read(key)
            except CacheError as exc:
                logger.warning("cache read of %s failed, computing instead: %s", key, exc)
            else:
                if value is not MISSING:
                    return cast(R, value)
        if self.flight is None:
            return await self._fill(key, args, kwargs)
        return await self.flight.do(key, functools.partial(self._fill, key, args, kwargs))

    async def _fill(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        value = await self.func(*args, **kwargs)
        ttl = self.ttl
        if ttl is not None and self.jitter:
            ttl *= 1.0 + random.uniform(-self.jitter, self.jitter)
        try:
            await self.cache.set(key, value, ttl)
        except CacheError as exc:
            logger.warning("cache write of %s failed, returning the value uncached: %s", key, exc)
        return value


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

    The protections of :func:`redline.cache.strategies.cache_aside` route every call through
    it: ``lock=True`` (single-flight across processes with a Redis lock), ``bloom=`` (a
    filter of the call keys that can exist — fill it with ``fn.key(...)``; a call whose key
    is not in it returns ``MISSING`` without running the body), ``negative_ttl=`` (a body
    that returns ``MISSING`` means "no such thing", remembered that long) and
    ``early_refresh=`` (XFetch: a hot key is recomputed before it expires).
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
        l1_authoritative = isinstance(cache, MemoryCache)
        peek: Callable[[str, Any], Any] | None = getattr(cache, "get_nowait", None)
        l1_peek = getattr(cache, "l1_peek", None)
        if l1_peek is not None:  # a TieredCache: read its L1 directly
            peek = l1_peek
        loader: _Loader[R] = _Loader(
            func,
            cache,
            ttl=ttl,
            jitter=jitter,
            single_flight=single_flight,
            l1_authoritative=l1_authoritative,
        )
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
        safe = _MEMO_SAFE
        protected = (
            lock not in (None, False)
            or bloom is not None
            or negative_ttl is not None
            or early_refresh is not None
        )

        if protected:
            # Values are stored wrapped (early refresh) or as negative markers: every call
            # goes through cache-aside, which reads and unwraps them.
            from redline.cache.strategies import CacheAside

            aside = CacheAside(
                cache,
                lock=lock,
                bloom=bloom,
                negative_ttl=negative_ttl,
                early_refresh=early_refresh,
            )

            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                call_ttl = ttl
                if call_ttl is not None and jitter:
                    call_ttl *= 1.0 + random.uniform(-jitter, jitter)
                value = await aside.get(
                    key_of(args, kwargs), lambda: func(*args, **kwargs), ttl=call_ttl
                )
                return cast(R, value)

        elif peek is not None and key is None:

            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                # key_of() inlined for the common all-positional call: this is the hot path.
                cache_key: str | None = None
                if not kwargs:
                    for arg in args:
                        if type(arg) not in safe:
                            break
                    else:
                        cache_key = memo_get(args)
                if cache_key is None:
                    cache_key = key_of(args, kwargs)
                value = peek(cache_key, MISSING)
                if value is not MISSING:
                    return cast(R, value)
                return await loader.load(cache_key, args, kwargs)

        elif peek is not None:

            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                cache_key = key_of(args, kwargs)
                value = peek(cache_key, MISSING)
                if value is not MISSING:
                    return cast(R, value)
                return await loader.load(cache_key, args, kwargs)

        else:

            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                return await loader.load(key_of(args, kwargs), args, kwargs)

        def key_method(*args: P.args, **kwargs: P.kwargs) -> str:
            return key_of(args, kwargs)

        async def invalidate(*args: P.args, **kwargs: P.kwargs) -> bool:
            return await cache.delete(key_of(args, kwargs))

        functools.update_wrapper(wrapper, func)
        wrapped = cast(Any, wrapper)
        wrapped.key = key_method
        wrapped.invalidate = invalidate
        wrapped.cache = cache
        return cast(CachedFunction[P, R], wrapper)

    return decorate
