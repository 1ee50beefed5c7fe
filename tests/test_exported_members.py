"""The public API is curated and honest: a small root, one export list per package, every
``__all__`` importable, main classes reachable from their domain's package, cheap import."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import redline
import redline.exceptions
from redline._lazy import read_exports

PACKAGES = [
    "redline",
    "redline.bench",
    "redline.cache",
    "redline.concurrency",
    "redline.gateway",
    "redline.lb",
    "redline.serve",
]

# The classes a reader looks for in each domain; each must be in its package's __all__.
MAIN_CLASSES = {
    "redline.cache": [
        "BloomFilter",
        "CacheAside",
        "CachedFunction",
        "CircuitBreaker",
        "DistributedLock",
        "LocalInvalidation",
        "MemoryCache",
        "PostgresSink",
        "RedisBloomFilter",
        "RedisCache",
        "RedisInvalidation",
        "RedisStreamQueue",
        "SingleFlight",
        "TieredCache",
        "WriteBehind",
    ],
    "redline.concurrency": ["MicroBatcher", "Offloader", "RateLimiter", "RedisRateLimiter"],
    "redline.serve": ["HashingModel", "Model", "Settings"],
    "redline.gateway": ["Gateway", "OutlierEjector", "Upstream", "UpstreamModel"],
    "redline.lb": ["ClusterSupervisor", "NginxMaster", "NginxOptions", "Replica"],
    "redline.bench": ["LatencyHistogram", "LoadConfig", "LoadResult", "Workload"],
}


def test_the_root_stays_small_and_carries_no_stats_or_nginx_options() -> None:
    assert len(redline.__all__) <= 25, redline.__all__
    assert not [name for name in redline.__all__ if name.endswith("Stats")]
    for name in ("Strategy", "RateLimit", "NginxOptions", "CacheStats"):
        assert name not in redline.__all__
        with pytest.raises(AttributeError):
            getattr(redline, name)


def test_the_root_has_what_the_readme_examples_import() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    imported = set()
    for line in readme.splitlines():
        if line.startswith("from redline import "):
            imported |= {n.strip() for n in line.removeprefix("from redline import ").split(",")}
    assert imported
    assert imported <= set(redline.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_resolves_once(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert len(set(names)) == len(names)
    assert names == sorted(names)
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_the_packages_one_export_list(package: str) -> None:
    module = importlib.import_module(package)
    source = inspect.getsource(module)
    assert sorted(read_exports(source)) == module.__all__
    assert "_EXPORTS" not in source


@pytest.mark.parametrize(("package", "classes"), sorted(MAIN_CLASSES.items()))
def test_main_classes_are_reachable_from_their_domain(package: str, classes: list[str]) -> None:
    module = importlib.import_module(package)
    for name in classes:
        assert name in module.__all__, f"{package}.{name}"
        assert getattr(module, name).__module__.startswith(package + "."), name


def test_names_in_subpackages_live_in_that_domain() -> None:
    for package in PACKAGES[1:]:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", None)
            if home is not None and (inspect.isclass(obj) or inspect.isfunction(obj)):
                assert home.startswith(package + "."), f"{package}.{name} is from {home}"


def test_the_root_re_exports_its_domains_objects() -> None:
    import redline.cache
    import redline.concurrency

    assert redline.MemoryCache is redline.cache.MemoryCache
    assert redline.MicroBatcher is redline.concurrency.MicroBatcher
    assert redline.RedlineError is redline.exceptions.RedlineError


def test_root_exceptions_are_rooted_in_redline_error() -> None:
    for name in redline.__all__:
        obj = getattr(redline, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, redline.RedlineError), name
            assert name in redline.exceptions.__all__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'redline' has no attribute 'Nope'"):
        redline.Nope  # noqa: B018


def test_a_name_re_exported_twice_is_refused() -> None:
    source = "from a import X as X\nif TYPE_CHECKING:\n    from b import X as X\n"
    with pytest.raises(ValueError, match="'X' is re-exported twice"):
        read_exports(source)


def test_only_redundant_alias_imports_are_exports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .a import A as A, helper\n"
        "from .b import B as Renamed\n"
        "if TYPE_CHECKING:\n"
        "    from .c import C as C\n"
        "def f():\n"
        "    from .d import D as D\n"
    )
    assert read_exports(source) == {"A": ".a", "C": ".c"}


def test_importing_redline_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, redline; "
        "heavy = ('redis', 'fastapi', 'torch', 'numpy', 'jinja2'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
