"""Helpers of the cache package that are not API: Redis globs, sizes, copy-on-store policy."""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Copier", "estimate_size", "glob_matcher", "prepare_for_storage"]


@functools.lru_cache(maxsize=256)
def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate matching keys against a Redis glob: ``*``, ``?``, ``[a-z]``, ``[^x]``, ``\\``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "]") else i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    regex = re.compile("".join(out) + r"\Z", re.DOTALL)
    return lambda key: regex.match(key) is not None


def estimate_size(value: Any) -> int:
    """Approximate bytes held by *value*: ``sys.getsizeof`` plus one level of contents.

    numpy arrays count their ``nbytes``; dict keys and values, and list/tuple/set items, add
    their own ``getsizeof`` (not recursively: a cheap estimate, not an exact census).
    """
    size = sys.getsizeof(value)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return max(size, nbytes + 112)
    if isinstance(value, dict):
        getsize = sys.getsizeof
        for k, v in value.items():
            size += getsize(k) + getsize(v)
    elif isinstance(value, list | tuple | set | frozenset):
        getsize = sys.getsizeof
        for item in value:
            size += getsize(item)
    return size


_IMMUTABLE: Final = frozenset({type(None), bool, int, float, complex, str, bytes})
Copier = Callable[[Any], Any]


def _is_immutable(value: Any) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE:
        return True
    if kind is tuple or kind is frozenset:
        return all(_is_immutable(item) for item in value)
    return False


def _structural_copy(value: Any) -> Any:
    """A deep copy that is fast for the JSON-like containers caches usually hold."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {k: _structural_copy(v) for k, v in value.items()}
    if kind is list:
        return [_structural_copy(v) for v in value]
    if kind is tuple:
        return tuple(_structural_copy(v) for v in value)
    return copy.deepcopy(value)


def _readonly_view(value: Any) -> Any:
    view = value.view()
    view.flags.writeable = False
    return view


def _is_flat(value: Any) -> bool:
    """A list or dict whose items (and keys) are all immutable scalars."""
    kind = type(value)
    if kind is list:
        return all(type(v) in _IMMUTABLE for v in value)
    if kind is dict:
        return all(type(k) in _IMMUTABLE and type(v) in _IMMUTABLE for k, v in value.items())
    return False


def _dict_copier(mutable_keys: tuple[Any, ...]) -> Copier:
    """Copy a dict and, below it, only the flat lists/dicts at *mutable_keys* (precomputed)."""

    def copy_dict(value: Any) -> Any:
        out = value.copy()
        for key in mutable_keys:
            out[key] = out[key].copy()
        return out

    return copy_dict


def prepare_for_storage(value: Any) -> tuple[Any, Copier | None]:
    """The value a MemoryCache stores (a private copy if needed) and how to hand it out."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value, None
    if kind is dict:
        if all(type(k) in _IMMUTABLE and type(v) in _IMMUTABLE for k, v in value.items()):
            return dict(value), dict.copy
        # One level of flat lists/dicts below (e.g. {"tags": ["a", "b"]}): copy just those.
        if all(type(k) in _IMMUTABLE for k in value) and all(
            type(v) in _IMMUTABLE or _is_flat(v) for v in value.values()
        ):
            mutable = tuple(k for k, v in value.items() if type(v) not in _IMMUTABLE)
            return _structural_copy(value), _dict_copier(mutable)
        return _structural_copy(value), _structural_copy
    if kind is list:
        if all(type(v) in _IMMUTABLE for v in value):
            return list(value), list.copy
        return _structural_copy(value), _structural_copy
    if (kind is tuple or kind is frozenset) and _is_immutable(value):
        return value, None
    numpy = sys.modules.get("numpy")
    if numpy is not None and kind is numpy.ndarray:
        stored = value.copy()
        stored.flags.writeable = False
        return stored, _readonly_view
    return copy.deepcopy(value), copy.deepcopy
