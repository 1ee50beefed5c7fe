"""Helpers shared by the concurrency primitives; not public API."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["is_async_callable", "require_positive_int"]


def is_async_callable(func: Callable[..., Any]) -> bool:
    """True when calling *func* returns a coroutine (functions, methods, async ``__call__``)."""
    while hasattr(func, "func") and not inspect.isfunction(func):  # functools.partial
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - an object with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def require_positive_int(name: str, value: int) -> int:
    """Return *value* when it is an int >= 1, else raise an exact ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
