"""Package exports written once: the re-export imports are the list.

A package's ``__init__.py`` names each public name exactly once, as a redundant-alias import
(``from redline.cache.memory import MemoryCache as MemoryCache``): the form PEP 484, mypy
``--strict`` (``no_implicit_reexport``) and ruff all read as "re-exported on purpose". Imports
of light modules run at import time; imports of modules that pull in redis-py, FastAPI, numpy
or torch sit under ``if TYPE_CHECKING:``, so type checkers see them (``from redline import
MemoryCache`` is fully typed for users) but nothing runs. At run time :func:`lazy_exports`
reads that same import list from the package's own source and builds ``__all__`` and a PEP 562
``__getattr__`` that imports a name the first time it is used.

Why not the alternatives: a separate ``{name: module}`` table plus ``TYPE_CHECKING`` imports
plus ``__all__`` is three copies that drift; a ``__getattr__`` typed ``-> Any`` alone would
make every re-exported name ``Any`` for users' type checkers; a ``.pyi`` stub is a second copy.

Example::

    from redline._lazy import lazy_exports as _lazy_exports
    from redline.cache.keys import make_key as make_key            # light: imported now

    if TYPE_CHECKING:
        from redline.cache.redis import RedisCache as RedisCache   # heavy: on first use

    __all__, __getattr__, __dir__ = _lazy_exports(__name__)

Any other import in an ``__init__.py`` (no alias, or a different one) is not an export. The
package's source must be readable at import time (it is for wheels and editable installs; a
bytecode-only install would fail with :class:`LookupError`).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports", "read_exports"]


def read_exports(source: str) -> dict[str, str]:
    """``{name: module}`` for every redundant-alias ``from M import N as N`` in *source*.

    Only imports at the top level and directly under ``if TYPE_CHECKING:`` count; the
    module names keep their leading dots when relative.
    """
    exports: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            statements = node.body
        else:
            statements = [node]
        for statement in statements:
            if not isinstance(statement, ast.ImportFrom):
                continue
            module = "." * statement.level + (statement.module or "")
            for alias in statement.names:
                if alias.asname == alias.name:
                    if alias.name in exports:
                        raise ValueError(f"{alias.name!r} is re-exported twice")
                    exports[alias.name] = module
    return exports


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def lazy_exports(
    package: str,
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__`` (sorted), ``__getattr__`` and ``__dir__`` of *package*, read from its re-exports.

    A name imported on first use is stored in the package, so later lookups do not come back
    here. Raises :class:`LookupError` if the package's source cannot be read.
    """
    module = sys.modules[package]
    spec = module.__spec__
    loader = spec.loader if spec is not None else None
    get_source = getattr(loader, "get_source", None)
    source = get_source(package) if get_source is not None else None
    if source is None:
        raise LookupError(f"cannot read the source of {package!r} to find its exports")
    exports = read_exports(source)
    namespace = module.__dict__

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(target, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return sorted(exports), __getattr__, __dir__
