"""Bloom filters that guard cache-aside against penetration (lookups of keys that don't exist).

A Bloom filter answers "certainly absent" or "probably present": no false negatives, and
false positives at about *error_rate* once *capacity* keys are in. Sizes follow the usual
optimum, ``m = -n ln p / (ln 2)^2`` bits and ``k = (m / n) ln 2`` hashes. Bit positions come
from double hashing ``h1 + i * h2`` over a 128-bit BLAKE2b digest, which is stable across
processes and machines (Python's ``hash()`` is salted per process, so it is not used).

:class:`RedisBloomFilter` keeps the bitmap in Redis so every process shares it. Design:
the whole bitmap is ONE string key, ``{name}:bloom``; a key's ``k`` bits are set or read
with a single ``BITFIELD`` / ``BITFIELD_RO`` command, pipelined for batches. One key means
one slot in Redis Cluster, and the hash tag ``{name}`` puts the build key of
:meth:`RedisBloomFilter.rebuild` in the same slot, so the swap is one atomic ``RENAME``.
Sharding into N bitmaps would spread load over masters, but a filter sized for 10 M keys
at 1 % is ~12 MB, well within one node, and the atomic swap would be lost; so: one key.

Example::

    seen = BloomFilter(capacity=1_000_000, error_rate=0.01)
    seen.add_many(user_ids)
    if "u:42" not in seen:
        ...  # certainly not a user: don't touch the database
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from hashlib import blake2b

from redline.cache.lock import RedisClient, translate_redis_errors

__all__ = ["BloomFilter", "RedisBloomFilter", "bloom_parameters"]

_CHUNK = 1000  # keys per pipeline round trip


def bloom_parameters(capacity: int, error_rate: float) -> tuple[int, int]:
    """The optimal ``(bits, hashes)`` for *capacity* keys at false-positive rate *error_rate*."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
    if not 0 < error_rate < 1:
        raise ValueError(f"error_rate must be between 0 and 1 (exclusive), got {error_rate!r}")
    bits = math.ceil(-capacity * math.log(error_rate) / math.log(2) ** 2)
    hashes = max(1, round(bits / capacity * math.log(2)))
    return bits, hashes


def _positions(key: str, bits: int, hashes: int) -> list[int]:
    """The *hashes* bit positions of *key* in a filter of *bits* bits (double hashing)."""
    digest = blake2b(key.encode(), digest_size=16).digest()
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:], "little") | 1  # odd: never a zero stride
    return [(h1 + i * h2) % bits for i in range(hashes)]


class BloomFilter:
    """An in-process Bloom filter of *capacity* keys at *error_rate* false positives.

    Example::

        bloom = BloomFilter(capacity=10_000, error_rate=0.01)
        bloom.add("user:1")
        assert "user:1" in bloom
    """

    def __init__(self, capacity: int, error_rate: float = 0.01) -> None:
        self.bits, self.hashes = bloom_parameters(capacity, error_rate)
        self.capacity = capacity
        self.error_rate = error_rate
        self._array = bytearray((self.bits + 7) // 8)

    def add(self, key: str) -> None:
        """Record *key*."""
        array = self._array
        for pos in _positions(key, self.bits, self.hashes):
            array[pos >> 3] |= 1 << (pos & 7)

    def add_many(self, keys: Iterable[str]) -> None:
        """Record every key of *keys*."""
        for key in keys:
            self.add(key)

    def contains(self, key: str) -> bool:
        """``False`` if *key* was certainly never added; ``True`` if it probably was."""
        array = self._array
        return all(
            array[pos >> 3] & (1 << (pos & 7)) for pos in _positions(key, self.bits, self.hashes)
        )

    __contains__ = contains

    def rebuild(self, keys: Iterable[str]) -> None:
        """Replace the contents with exactly *keys* (drops deleted keys, resets the fill)."""
        fresh = BloomFilter(self.capacity, self.error_rate)
        fresh.add_many(keys)
        self._array = fresh._array

    rotate = rebuild

    def clear(self) -> None:
        """Forget every key."""
        self._array = bytearray(len(self._array))

    def bits_set(self) -> int:
        """How many bits are 1."""
        return sum(byte.bit_count() for byte in self._array)

    def __len__(self) -> int:
        """An estimate of how many distinct keys were added (from the fill ratio)."""
        return _estimate_count(self.bits_set(), self.bits, self.hashes)

    def __repr__(self) -> str:
        return (
            f"<BloomFilter capacity={self.capacity} error_rate={self.error_rate} "
            f"bits={self.bits} hashes={self.hashes} ~{len(self)} keys>"
        )


def _estimate_count(ones: int, bits: int, hashes: int) -> int:
    if ones >= bits:
        return bits
    return round(-bits / hashes * math.log(1 - ones / bits))


class RedisBloomFilter:
    """A Bloom filter in one Redis bitmap, shared by every process (Redis or Redis Cluster).

    The bitmap lives at ``{name}:bloom``; see the module docstring for why it is one key.

    Example::

        bloom = RedisBloomFilter(client, "users", capacity=100_000, error_rate=0.01)
        await bloom.add_many(ids)
        known = await bloom.contains("user:7")
    """

    def __init__(
        self, client: RedisClient, name: str, capacity: int, error_rate: float = 0.01
    ) -> None:
        if not name or "{" in name or "}" in name:
            raise ValueError(f"name must be non-empty and contain no braces, got {name!r}")
        self.bits, self.hashes = bloom_parameters(capacity, error_rate)
        self.client = client
        self.name = name
        self.capacity = capacity
        self.error_rate = error_rate
        self.key = f"{{{name}}}:bloom"
        self._building_key = f"{{{name}}}:bloom:building"
        self._asks: list[tuple[str, asyncio.Future[bool]]] = []
        self._askers: set[asyncio.Task[None]] = set()

    def _set_args(self, key: str) -> list[str | int]:
        args: list[str | int] = []
        for pos in _positions(key, self.bits, self.hashes):
            args += ["SET", "u1", pos, 1]
        return args

    def _get_args(self, key: str) -> list[str | int]:
        args: list[str | int] = []
        for pos in _positions(key, self.bits, self.hashes):
            args += ["GET", "u1", pos]
        return args

    async def add(self, key: str) -> None:
        """Record *key* (one ``BITFIELD`` command)."""
        with translate_redis_errors(f"bloom filter {self.key!r}"):
            await self.client.execute_command("BITFIELD", self.key, *self._set_args(key))

    async def add_many(self, keys: Iterable[str]) -> None:
        """Record every key of *keys*, pipelined ``_CHUNK`` at a time."""
        await self._add_into(self.key, keys)

    async def _add_into(self, target: str, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) >= _CHUNK:
                await self._pipeline_set(target, batch)
                batch = []
        if batch:
            await self._pipeline_set(target, batch)

    async def _pipeline_set(self, target: str, keys: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("BITFIELD", target, *self._set_args(key))
        with translate_redis_errors(f"bloom filter {target!r}"):
            await pipe.execute()

    async def contains(self, key: str) -> bool:
        """``False`` if *key* was certainly never added; ``True`` if it probably was.

        The calls made in one event-loop tick share one pipelined round trip.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asks.append((key, future))
        if len(self._asks) == 1:
            task = asyncio.create_task(self._answer_asks())
            self._askers.add(task)
            task.add_done_callback(self._askers.discard)
        return await future

    async def _answer_asks(self) -> None:
        asks, self._asks = self._asks[:_CHUNK], self._asks[_CHUNK:]
        if self._asks:
            task = asyncio.create_task(self._answer_asks())
            self._askers.add(task)
            task.add_done_callback(self._askers.discard)
        try:
            answers = await self.contains_many(key for key, _ in asks)
        except Exception as exc:
            for _, future in asks:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(asks, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def contains_many(self, keys: Iterable[str]) -> list[bool]:
        """:meth:`contains` for each of *keys*, in order, pipelined."""
        keys = list(keys)
        answers: list[bool] = []
        for start in range(0, len(keys), _CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + _CHUNK]:
                pipe.execute_command("BITFIELD_RO", self.key, *self._get_args(key))
            with translate_redis_errors(f"bloom filter {self.key!r}"):
                results = await pipe.execute()
            answers += [all(found) for found in results]
        return answers

    async def rebuild(self, keys: Iterable[str]) -> None:
        """Build a filter of exactly *keys* aside, then swap it in with one atomic ``RENAME``.

        Readers see the old filter until the swap and the new one after, never a half-built one.
        """
        with translate_redis_errors(f"rebuilding bloom filter {self.key!r}"):
            await self.client.delete(self._building_key)
            await self._add_into(self._building_key, keys)
            if await self.client.exists(self._building_key):
                await self.client.rename(self._building_key, self.key)
            else:  # no keys at all: the new filter is empty
                await self.client.delete(self.key)

    rotate = rebuild

    async def clear(self) -> None:
        """Forget every key."""
        with translate_redis_errors(f"bloom filter {self.key!r}"):
            await self.client.delete(self.key)

    async def count(self) -> int:
        """An estimate of how many distinct keys were added (from ``BITCOUNT``)."""
        with translate_redis_errors(f"bloom filter {self.key!r}"):
            ones = int(await self.client.bitcount(self.key))
        return _estimate_count(ones, self.bits, self.hashes)

    def __repr__(self) -> str:
        return (
            f"<RedisBloomFilter {self.key!r} capacity={self.capacity} "
            f"error_rate={self.error_rate} bits={self.bits} hashes={self.hashes}>"
        )
