"""``redline.cache.__all__`` is honest, and importing the package loads no backend."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import redline.cache
from redline._lazy import read_exports


def test_every_name_in_all_resolves_and_nothing_is_left_out() -> None:
    for name in redline.cache.__all__:
        assert getattr(redline.cache, name) is not None, name
    assert sorted(redline.cache.__all__) == sorted(read_exports(inspect.getsource(redline.cache)))
    assert len(set(redline.cache.__all__)) == len(redline.cache.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'redline\.cache' has no attribute 'Nope'"):
        redline.cache.Nope  # noqa: B018


def test_importing_the_package_imports_no_redis_client() -> None:
    code = "import sys, redline.cache; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
