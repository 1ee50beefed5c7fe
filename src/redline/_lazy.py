"""Lazy package exports (PEP 562): a package lists each public name with the module it lives
in, and a name is imported the first time it is used, so importing the package stays cheap.

Example::

    _EXPORTS = {"MemoryCache": ".memory", "cached": ".decorator"}   # or absolute module names
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of *package*, which exports *exports*' names.

    Module names may be relative to *package* (``".memory"``). A name once imported is stored
    in the package, so later lookups do not come back here.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
