"""redline.concurrency.__all__ is honest: every name exists, is public, and is documented."""

from __future__ import annotations

import inspect

import redline.concurrency as concurrency


def test_all_names_exist_and_are_documented() -> None:
    for name in concurrency.__all__:
        obj = getattr(concurrency, name)
        assert not name.startswith("_")
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_no_public_primitive_is_missing_from_all() -> None:
    public = {
        name
        for name, obj in vars(concurrency).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__.startswith("redline.concurrency")
    }
    assert public == set(concurrency.__all__)
