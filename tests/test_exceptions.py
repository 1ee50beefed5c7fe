"""The exception contract: every class redline defines is a RedlineError and pickles intact."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
from typing import Any

import pytest

import redline
from redline import exceptions
from redline.concurrency import Offloader, run_in_process
from redline.exceptions import RateLimited, RedlineError

# Classes whose constructor takes more than a message, with arguments that set every extra
# attribute to something other than its default (so a lost attribute shows).
_SPECIAL: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "redline.exceptions.RateLimited": (("rate limit 'api' refused 3 units",), {"retry_after": 2.5}),
    "redline.exceptions.GatewayError": (("upstream 'a' failed",), {"status": 599}),
    "redline.exceptions.UpstreamUnavailable": (("every upstream is down",), {"status": 598}),
    "redline.exceptions.UpstreamTimeout": (("no answer within 2.0 s",), {"status": 597}),
    "redline.exceptions.UpstreamRejected": (("upstream said 422",), {"status": 422}),
    "redline.gateway.client.CallFailed": (
        ("upstream 'a': 503",),
        {"status": 502, "retryable": True, "retry_after": 1.25, "upstream_status": 503},
    ),
    "redline.serve.errors.APIError": (
        (429, "too many requests"),
        {"param": "input", "code": "rate_limited", "headers": {"Retry-After": "2"}},
    ),
    "redline.cache.keys._UnsupportedArgument": ((object(),), {}),
}


def _exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a redline module (imported by walking the package)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(redline.__path__, "redline."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


CLASSES = _exception_classes()


def _qualname(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _make(cls: type[BaseException]) -> BaseException:
    args, kwargs = _SPECIAL.get(_qualname(cls), ((f"{cls.__name__} happened",), {}))
    return cls(*args, **kwargs)


def test_the_walk_finds_the_exceptions_module_and_the_classes_beside_code() -> None:
    names = {_qualname(cls) for cls in CLASSES}
    exported = {f"redline.exceptions.{name}" for name in exceptions.__all__}
    assert exported <= names
    assert {
        "redline.gateway.client.CallFailed",
        "redline.serve.errors.APIError",
        "redline.serve.cache_control.CacheControlError",
        "redline.serve.cache_control.CacheControlRefused",
    } <= names


def test_every_name_in_all_is_an_exception_class() -> None:
    for name in exceptions.__all__:
        obj = getattr(exceptions, name)
        assert inspect.isclass(obj), name
        assert issubclass(obj, Exception), name


@pytest.mark.parametrize("cls", CLASSES, ids=_qualname)
def test_each_exception_is_a_redline_error_and_pickles(cls: type[BaseException]) -> None:
    error = _make(cls)
    assert isinstance(error, RedlineError)
    with pytest.raises(cls) as raised:
        raise error
    caught = raised.value
    copy = pickle.loads(pickle.dumps(caught))
    assert type(copy) is cls
    assert str(copy) == str(caught)
    assert copy.args == caught.args
    assert vars(copy) == vars(caught)
    for name in ("status", "retry_after", "retryable", "upstream_status", "param", "code"):
        assert getattr(copy, name, None) == getattr(caught, name, None), name


def test_extra_attributes_survive_pickling() -> None:
    copy = pickle.loads(pickle.dumps(RateLimited("refused", retry_after=2.5)))
    assert (copy.retry_after, str(copy)) == (2.5, "refused")


def test_builtin_bases_stay_catchable() -> None:
    assert issubclass(exceptions.SerializationError, ValueError)
    assert issubclass(exceptions.WrongValueType, TypeError)
    assert issubclass(exceptions.ModelOutputError, ValueError)
    assert issubclass(exceptions.NotStarted, RuntimeError)
    assert issubclass(exceptions.UpstreamTimeout, TimeoutError)
    timeout = pickle.loads(pickle.dumps(exceptions.UpstreamTimeout("late", status=504)))
    assert (str(timeout), timeout.status) == ("late", 504)


def refuse(retry_after: float) -> None:
    """Runs in a worker process (module level, so ``spawn`` can import it)."""
    raise RateLimited("rate limit 'api' refused 1 unit", retry_after=retry_after)


async def test_run_in_process_delivers_rate_limited() -> None:
    async with Offloader(max_processes=1):
        with pytest.raises(RateLimited) as raised:
            await run_in_process(refuse, 1.75)
    assert str(raised.value) == "rate limit 'api' refused 1 unit"
    assert raised.value.retry_after == 1.75
