"""``redline.__all__`` is honest: every name resolves, none is left out, import is cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import redline
import redline.exceptions


def test_every_name_in_all_resolves() -> None:
    for name in redline.__all__:
        assert getattr(redline, name) is not None, name


def test_all_has_no_duplicates_and_matches_the_lazy_table() -> None:
    assert len(set(redline.__all__)) == len(redline.__all__)
    eager = set(redline.exceptions.__all__) | {"__version__"}
    assert set(redline.__all__) == eager | set(redline._EXPORTS)


def test_every_exception_is_exported_and_rooted_in_redline_error() -> None:
    for name in redline.exceptions.__all__:
        exc = getattr(redline, name)
        assert issubclass(exc, redline.RedlineError), name


def test_lazy_names_are_the_subpackage_objects() -> None:
    import redline.cache
    import redline.concurrency

    assert redline.MemoryCache is redline.cache.MemoryCache
    assert redline.MicroBatcher is redline.concurrency.MicroBatcher


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'redline' has no attribute 'Nope'"):
        redline.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_importing_redline_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, redline; "
        "heavy = ('redis', 'fastapi', 'torch', 'numpy', 'jinja2'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
