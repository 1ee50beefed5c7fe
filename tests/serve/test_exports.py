"""``redline.serve.__all__`` is honest, and importing the package does no heavy work."""

from __future__ import annotations

import subprocess
import sys

import redline.serve


def test_all_names_exist_and_are_sorted() -> None:
    for name in redline.serve.__all__:
        assert hasattr(redline.serve, name), name
    assert redline.serve.__all__ == sorted(redline.serve.__all__)


def test_public_objects_say_they_live_in_serve() -> None:
    for name in redline.serve.__all__:
        assert getattr(redline.serve, name).__module__.startswith("redline.serve"), name


def test_import_loads_neither_torch_nor_a_model() -> None:
    code = "import sys, redline.serve; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_app_and_its_limiters_load_redis_py_only_when_redis_is_used() -> None:
    """A server without Redis never imports redis-py: the limiters import it on first use."""
    code = (
        "import sys, redline.serve.app, redline.serve.ratelimit, redline.serve.auth_failures; "
        "print(sorted(m for m in ('redis', 'tenacity') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
