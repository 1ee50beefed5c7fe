"""Helpers of the cache package that are not API: Redis-glob matching and size estimates."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["estimate_size", "glob_matcher"]


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
