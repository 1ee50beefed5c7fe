"""redline.bench's curated __all__ is honest."""

from __future__ import annotations

import redline.bench


def test_all_names_exist_and_are_sorted_and_unique() -> None:
    names = redline.bench.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(redline.bench, name) is not None
    public = {name for name in vars(redline.bench) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(redline.bench, name)).__name__ == "module"}
    assert public - modules == set(names)
