"""Canonical cache keys: the same call gives the same key in every process and on every run.

``hash()`` is salted per process, so keys are built from a canonical byte encoding of the
bound arguments instead, hashed with BLAKE2b::

    >>> make_key("app.embed", ("hello",), {}, namespace="redline", version=1)
    'redline:app.embed:1:...'

Encoding: arguments are bound to the function's signature (when one is given) so that
``f(1, b=2)`` and ``f(a=1, b=2)`` and ``f(1)`` with ``b=2`` as the default give one key.
Values are encoded with orjson (dict keys sorted). ``str``, ``int``, ``float``, ``bool``,
``None``, ``list``, ``tuple`` (same key as the equal ``list``), ``dict`` with ``str`` keys,
dataclasses, ``datetime``, ``UUID`` and enums are native; ``bytes``, ``set``/``frozenset``,
numpy arrays (dtype + shape + data) and numpy scalars are tagged. Anything else raises
``TypeError`` naming the type and suggesting ``key=``.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

import orjson

from redline.exceptions import RedlineError

__all__ = ["make_key"]

_OPTIONS = orjson.OPT_SORT_KEYS


class _UnsupportedArgument(RedlineError, TypeError):
    """An argument type that has no canonical encoding."""

    def __init__(self, value: Any) -> None:
        self.type_name = f"{type(value).__module__}.{type(value).__qualname__}"
        super().__init__(self.type_name)


def _encode_other(value: Any) -> Any:
    """orjson ``default`` hook: tagged encodings for the non-JSON types a key may hold."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"\x00bytes": bytes(value).hex()}
    if isinstance(value, set | frozenset):
        return {"\x00set": sorted(_canonical(item).decode() for item in value)}
    np = _numpy_if_loaded()
    if np is not None:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise _UnsupportedArgument(value)
            data = hashlib.blake2b(value.tobytes(), digest_size=16).hexdigest()
            return {"\x00ndarray": [value.dtype.str, list(value.shape), data]}
        if isinstance(value, np.generic):
            return {"\x00npscalar": [value.dtype.str, value.tobytes().hex()]}
    raise _UnsupportedArgument(value)


def _numpy_if_loaded() -> Any:
    """The numpy module if the program imported it (an array can't exist otherwise)."""
    import sys

    return sys.modules.get("numpy")


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, default=_encode_other, option=_OPTIONS)


def make_key(
    func_qualname: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    namespace: str,
    version: str | int,
    signature: inspect.Signature | None = None,
) -> str:
    """The cache key ``"{namespace}:{func_qualname}:{version}:{digest}"`` of one call.

    *signature* (``inspect.signature(func)``) makes keyword/positional spellings and applied
    defaults equivalent; without it, ``args`` and ``kwargs`` are encoded as given.

    >>> make_key("m.f", (1,), {"b": 2}, namespace="ns", version=3).startswith("ns:m.f:3:")
    True
    """
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"cannot build a cache key for {func_qualname}: {exc}") from exc
        bound.apply_defaults()
        args, kwargs = bound.args, bound.kwargs
    try:
        encoded = _canonical([list(args), dict(kwargs)])
    except TypeError as exc:
        cause = exc.__cause__
        if isinstance(cause, _UnsupportedArgument):
            detail = f"an argument of type {cause.type_name} has no canonical encoding"
        else:
            detail = str(exc)
        raise TypeError(
            f"cannot build a cache key for {func_qualname}: {detail}; "
            "pass key= to cached() to build the key yourself"
        ) from exc
    digest = hashlib.blake2b(encoded, digest_size=16).hexdigest()
    return f"{namespace}:{func_qualname}:{version}:{digest}"
