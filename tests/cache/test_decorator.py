"""@cached: stable keys across processes, binding equivalence, versions, single-flight, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from redline.cache.base import MISSING
from redline.cache.decorator import cached
from redline.cache.keys import make_key
from redline.cache.memory import MemoryCache
from redline.cache.redis import RedisCache
from redline.exceptions import CacheUnavailable

REPO = Path(__file__).resolve().parents[2]

KEY_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from redline.cache.decorator import cached
    from redline.cache.memory import MemoryCache

    async def embed(text, n=2, *, options=None, **extra):
        return text

    embed.__module__ = "app.models"
    embed = cached(MemoryCache(), version="v3", namespace="ns")(embed)
    print(embed.key("héllo", 3, options={"b": [1, 2.5, None], "a": True}, tag=b"\\x00\\xff"))
    print(embed.key(np.arange(6, dtype=np.float32).reshape(2, 3), n={3, 1, 2}))
    print(embed.key("x"))
    """
)


def _key_in_subprocess(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", KEY_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    return out.stdout.split()


def test_keys_are_identical_across_processes_and_hash_seeds() -> None:
    keys: list[str] = []
    exec(KEY_SCRIPT, {"print": keys.append})  # the same script, in this process
    assert len(keys) == 3
    assert all(k.startswith("ns:app.models.embed:v3:") for k in keys)
    assert len(set(keys)) == 3
    assert _key_in_subprocess("1") == keys
    assert _key_in_subprocess("999") == keys


async def test_positional_keyword_and_default_spellings_share_one_key() -> None:
    @cached(MemoryCache())
    async def f(a: int, b: int = 2, *, c: str = "x") -> int:
        return a + b

    assert f.key(1) == f.key(1, 2) == f.key(a=1, b=2) == f.key(1, b=2, c="x") == f.key(b=2, a=1)
    assert f.key(1) != f.key(1, 3)
    assert f.key(1) != f.key(1.0)  # type: ignore[arg-type]
    assert f.key(1) != f.key(True)
    assert f.key(1).startswith(f"redline:{__name__}.")


async def test_key_covers_module_and_qualname_and_uses_blake2b_digest() -> None:
    @cached(MemoryCache(), namespace="app", version=7)
    async def g(x: str) -> str:
        return x

    key = g.key("a")
    prefix = (
        f"app:{__name__}.test_key_covers_module_and_qualname_and_uses_blake2b_digest.<locals>.g:7:"
    )
    assert key.startswith(prefix)
    assert len(key.removeprefix(prefix)) == 32
    qualname = "test_key_covers_module_and_qualname_and_uses_blake2b_digest.<locals>.g"
    assert key == make_key(f"{__name__}.{qualname}", ("a",), {}, namespace="app", version=7)


async def test_results_are_cached_and_invalidate_drops_one_call() -> None:
    cache = MemoryCache()
    calls: list[tuple[int, int]] = []

    @cached(cache, ttl=60)
    async def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    assert await add(1, 2) == 3
    assert await add(1, 2) == 3
    assert await add(a=1, b=2) == 3
    assert await add(2, 2) == 4
    assert calls == [(1, 2), (2, 2)]
    assert await add.invalidate(1, 2) is True
    assert await add.invalidate(1, 2) is False
    assert await add(1, 2) == 3
    assert calls == [(1, 2), (2, 2), (1, 2)]
    assert add.cache is cache
    assert await cache.get(add.key(2, 2)) == 4


async def test_equal_values_of_different_types_never_share_a_result() -> None:
    @cached(MemoryCache())
    async def show(x: Any) -> str:
        return repr(x)

    for _ in range(2):  # the second round is served from the cache (and its key memo)
        assert [await show(1), await show(True), await show(1.0), await show("1")] == [
            "1",
            "True",
            "1.0",
            "'1'",
        ]
        assert await show(x=1) == "1"
        assert await show(x=True) == "True"


async def test_none_results_are_cached() -> None:
    calls = 0

    @cached(MemoryCache())
    async def lookup(user: str) -> str | None:
        nonlocal calls
        calls += 1
        return None

    assert await lookup("ghost") is None
    assert await lookup("ghost") is None
    assert calls == 1


async def test_version_bump_busts_old_keys() -> None:
    cache = MemoryCache()

    async def body(x: int) -> str:
        return "v1"

    v1 = cached(cache, version=1)(body)
    assert await v1(5) == "v1"

    async def body2(x: int) -> str:
        return "v2"

    body2.__qualname__ = body.__qualname__
    v2 = cached(cache, version=2)(body2)
    assert v1.key(5) != v2.key(5)
    assert await v2(5) == "v2"
    assert await v1(5) == "v1"


async def test_hundred_concurrent_cold_calls_run_the_body_once() -> None:
    runs = 0

    @cached(MemoryCache(), ttl=60)
    async def slow(x: int) -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return x * 10

    results = await asyncio.gather(*(slow(7) for _ in range(100)))
    assert results == [70] * 100
    assert runs == 1


async def test_without_single_flight_concurrent_misses_each_run() -> None:
    runs = 0

    @cached(MemoryCache(), single_flight=False)
    async def slow(x: int) -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return x

    await asyncio.gather(*(slow(1) for _ in range(5)))
    assert runs == 5


async def test_ttl_gets_jitter_within_bounds() -> None:
    cache = MemoryCache()

    @cached(cache, ttl=100, jitter=0.2)
    async def f(i: int) -> int:
        return i

    for i in range(100):
        await f(i)
    ttls = [await cache.ttl(f.key(i)) for i in range(100)]
    assert all(t is not None and 79 < t <= 120 for t in ttls)
    assert max(t for t in ttls if t) - min(t for t in ttls if t) > 10


async def test_entries_expire_after_ttl() -> None:
    now = [0.0]
    cache = MemoryCache(timer=lambda: now[0])
    runs = 0

    @cached(cache, ttl=10, jitter=0)
    async def f() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await f() == 1
    now[0] = 9.9
    assert await f() == 1
    now[0] = 10.0
    assert await f() == 2


async def test_custom_key_function_builds_the_variable_part() -> None:
    cache = MemoryCache()

    @cached(cache, key=lambda user, request_id: f"user:{user}", namespace="n", version=2)
    async def profile(user: str, request_id: int) -> str:
        return f"{user}-{request_id}"

    assert await profile("ada", 1) == "ada-1"
    assert await profile("ada", 2) == "ada-1"
    qualname = "test_custom_key_function_builds_the_variable_part.<locals>.profile"
    assert profile.key("ada", 3) == f"n:{__name__}.{qualname}:2:user:ada"

    @cached(cache, key=lambda x: 5)  # type: ignore[arg-type,return-value]
    async def bad(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="must return str, got int"):
        await bad(1)


async def test_unsupported_argument_types_raise_type_error_suggesting_key() -> None:
    class Opaque:
        pass

    @cached(MemoryCache())
    async def f(x: Any) -> Any:
        return x

    with pytest.raises(TypeError, match=r"Opaque has no canonical encoding; pass key="):
        await f(Opaque())
    with pytest.raises(TypeError, match="cannot build a cache key"):
        await f(1, 2)  # type: ignore[call-arg]  # the misuse under test


async def test_rich_arguments_get_stable_keys() -> None:
    @cached(MemoryCache())
    async def f(x: Any) -> Any:
        return x

    a = np.arange(4, dtype=np.float32)
    assert f.key(a) == f.key(a.copy())
    assert f.key(a) != f.key(a.astype(np.float64))
    assert f.key(a) != f.key(a.reshape(2, 2))
    assert f.key({"b": 1, "a": 2}) == f.key({"a": 2, "b": 1})
    assert f.key({1, 2, 3}) == f.key({3, 2, 1})
    assert f.key(b"ab") != f.key("ab")
    assert await f([1, {"k": None}]) == [1, {"k": None}]


def test_sync_functions_are_refused() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError) as info:
        cached(MemoryCache())(plain)  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "cached() needs an async function; got sync function "
        "'test_sync_functions_are_refused.<locals>.plain'. "
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ttl": 0}, ValueError, r"^ttl must be > 0 or None, got 0$"),
        ({"jitter": 1.5}, ValueError, r"^jitter must be >= 0 and < 1, got 1.5$"),
        ({"key": "nope"}, TypeError, r"^key must be a callable returning str, got str$"),
    ],
)
def test_bad_decorator_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        cached(MemoryCache(), **kwargs)


def test_a_non_cache_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^cached\(\) needs a Cache, got dict$"):
        cached({})  # type: ignore[arg-type]


async def test_a_redis_cache_that_is_down_never_breaks_the_call(fresh_redis: Any) -> None:
    cache = RedisCache.from_url(fresh_redis.url, namespace="deco-down")
    runs = 0

    @cached(cache, ttl=30)
    async def f(x: int) -> int:
        nonlocal runs
        runs += 1
        return x + 1

    try:
        assert await f(1) == 2
        assert await f(1) == 2
        assert runs == 1
        fresh_redis.kill()
        with pytest.raises(CacheUnavailable):
            await cache.get("anything")
        assert await f(2) == 3
        assert await f(2) == 3
        assert runs == 3
    finally:
        await cache.close()


async def test_works_over_redis_without_a_sync_fast_path(redis_url: str) -> None:
    cache = RedisCache.from_url(redis_url, namespace="deco-redis")
    runs = 0

    @cached(cache, ttl=30)
    async def f(x: str) -> dict[str, str]:
        nonlocal runs
        runs += 1
        return {"x": x}

    try:
        await cache.delete(f.key("a"))
        results = await asyncio.gather(*(f("a") for _ in range(20)))
        assert results == [{"x": "a"}] * 20
        assert runs == 1
        assert await cache.get(f.key("a")) == {"x": "a"}
        assert await f.invalidate("a") is True
        assert await cache.get(f.key("a")) is MISSING
    finally:
        await cache.clear()
        await cache.close()


async def test_lock_runs_the_body_once_across_two_clients_of_one_redis(redis_url: str) -> None:
    runs = 0

    async def slow_square(x: int) -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.2)
        return x * x

    first = RedisCache.from_url(redis_url, namespace="deco-lock")
    second = RedisCache.from_url(redis_url, namespace="deco-lock")
    async with first, second:
        # Two decorations of one function on two clients: two "processes" sharing keys.
        a = cached(first, ttl=30, lock=True)(slow_square)
        b = cached(second, ttl=30, lock=True)(slow_square)
        assert a.key(7) == b.key(7)
        results = await asyncio.gather(*(f(7) for f in (a, b) for _ in range(50)))
        assert results == [49] * 100
        assert runs == 1
        await first.clear()


async def test_bloom_skips_the_body_for_keys_that_cannot_exist() -> None:
    from redline.cache.bloom import BloomFilter

    calls: list[int] = []
    bloom = BloomFilter(capacity=1000, error_rate=0.001)

    async def load_user(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    fn = cached(MemoryCache(), ttl=60, bloom=bloom)(load_user)
    bloom.add(fn.key(1))
    assert await fn(1) == {"id": 1}
    assert await fn(2) is MISSING  # not in the filter: the body never runs
    assert await fn(1) == {"id": 1}  # cached
    assert calls == [1]


async def test_negative_ttl_remembers_not_found() -> None:
    calls = 0

    async def find(name: str) -> Any:
        nonlocal calls
        calls += 1
        return MISSING  # "no such thing"

    fn = cached(MemoryCache(), ttl=60, negative_ttl=30)(find)
    assert await fn("ghost") is MISSING
    assert await fn("ghost") is MISSING
    assert calls == 1


async def test_early_refresh_hands_back_the_value_not_its_envelope() -> None:
    calls = 0

    async def compute(x: int) -> list[int]:
        nonlocal calls
        calls += 1
        return [x, x]

    fn = cached(MemoryCache(), ttl=60, early_refresh=1.0)(compute)
    assert await fn(3) == [3, 3]
    assert await fn(3) == [3, 3]  # a hit, unwrapped (the TTL is far: no refresh)
    assert calls == 1
