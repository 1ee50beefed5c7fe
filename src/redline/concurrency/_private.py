"""Helpers shared by the concurrency primitives; not public API."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["is_async_callable", "require_positive_int", "validate_cost", "validate_rate"]


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


def validate_rate(rate: float, per: float, burst: float | None) -> float:
    """Check ``rate``/``per``/``burst`` and return the bucket capacity."""
    for name, value in (("rate", rate), ("per", per)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if burst is None:
        return float(rate)
    if isinstance(burst, bool) or not isinstance(burst, int | float):
        raise TypeError(f"burst must be a number, got {type(burst).__name__}")
    if not burst > 0:
        raise ValueError(f"burst must be > 0, got {burst}")
    return float(burst)


def validate_cost(cost: float, capacity: float) -> float:
    """Check one request's cost against the bucket capacity."""
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        raise TypeError(f"cost must be a number, got {type(cost).__name__}")
    if not cost > 0:
        raise ValueError(f"cost must be > 0, got {cost}")
    if cost > capacity:
        raise ValueError(f"cost {cost} exceeds the bucket capacity {capacity:g}")
    return float(cost)
