"""Private: the tag index of a RedisCache — one Redis sorted set per tag, and the two
operations that must stay correct against each other while they run concurrently: a
tagged write and an invalidation of its tag.

What holds (tested in ``tests/cache/test_redis_tags.py``), for a key K written with tag T:
once ``invalidate(T)`` has returned, K holds no value whose tagged write returned before
that invalidation began (even while other invalidations of T run); an invalidation never
removes a value whose write began after it returned; and a key tagged while an
invalidation runs keeps its record, so the next invalidation finds it. Nothing relies on a
tag record and its keys sharing a Cluster slot: every step runs per node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from redline.cache._redis_commands import RedisCommands, raise_first_error
from redline.exceptions import CacheError

__all__ = ["TagIndex"]

# Tag records are sorted sets: member = a tagged Redis key, score = when it was tagged, a
# stamp that grows on each node (the server clock in microseconds, or one more than the
# highest stamp of the set when that is later), so tagging again after an invalidation read
# the set always scores above what that invalidation read.
#
# Record ARGV[2] in KEYS[1] with a new stamp, and keep the set until its longest-lived member
# expires: a new set takes the entry's TTL (ARGV[1] ms), a set with one lives on to the later
# of the two, and an entry that never expires (ARGV[1] = -1) makes the set persistent.
_TAG = """
local now = redis.call('TIME')
local stamp = tonumber(now[1]) * 1000000 + tonumber(now[2])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= stamp then
    stamp = tonumber(top[2]) + 1
end
local existed = #top > 0
redis.call('ZADD', KEYS[1], string.format('%.0f', stamp), ARGV[2])
local ttl = tonumber(ARGV[1])
if ttl < 0 then
    redis.call('PERSIST', KEYS[1])
elseif not existed then
    redis.call('PEXPIRE', KEYS[1], ttl)
else
    local left = redis.call('PTTL', KEYS[1])
    if left >= 0 and left < ttl then
        redis.call('PEXPIRE', KEYS[1], ttl)
    end
end
return 1
"""

# Forget the members of KEYS[1] stamped at or before ARGV[1] (the highest stamp an
# invalidation read), except ARGV[2..] (members whose value it could not delete). Members
# tagged again since keep their record: their stamp is higher.
_FORGET = """
if #ARGV == 1 then
    return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
local keep = {}
for i = 2, #ARGV do
    keep[ARGV[i]] = true
end
local removed = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
    if not keep[member] then
        removed = removed + redis.call('ZREM', KEYS[1], member)
    end
end
return removed
"""


class TagIndex:
    """The tag records of one namespace (``"{namespace}#tagged:{tag}"``) on *commands*."""

    def __init__(self, commands: RedisCommands, namespace: str) -> None:
        self._commands = commands
        self._prefix = namespace + "#tagged:"

    def tag_key(self, tag: str) -> str:
        """The Redis sorted set that records the keys carrying *tag*."""
        return self._prefix + tag

    async def set_tagged(self, full: str, data: bytes, px: int | None, tags: Iterable[str]) -> None:
        """SET *full* (expiring in *px* ms, or never), then record it under each of *tags*,
        in that order: an invalidation that read a record listing the key deletes the value
        after that read, so this value or a later one; one that read the record before the
        key was recorded leaves the new record alone (its stamp is newer). Records on the
        key's node go in its pipeline after the SET (a node runs a pipeline in order); the
        others follow once it answered. A tag that cannot be recorded unlinks the value, so
        that it never outlives an invalidation of that tag."""
        commands = self._commands
        tag_keys = list(dict.fromkeys(self.tag_key(tag) for tag in tags))
        ttl = -1 if px is None else px
        home = commands.routes.single or await commands.route(full)
        near: list[str] = []
        far: list[str] = []
        for tag_key in tag_keys:
            same = commands.routes.single is not None or await commands.route(tag_key) is home
            (near if same else far).append(tag_key)
        first = [full, *near]

        def queue(pipe: Any, index: int) -> None:
            if index == 0:
                pipe.set(full, data, px=px)
            else:
                pipe.eval(_TAG, 1, first[index], ttl, full)

        results = await commands.fan_out("SET", first, queue)
        if far:  # even after a failed SET: it may have been applied (a reply lost)
            results += await commands.fan_out(
                "SET", far, lambda pipe, index: pipe.eval(_TAG, 1, far[index], ttl, full)
            )
        if any(isinstance(result, CacheError) for result in results[1:]):
            # whether the SET was applied is unknown (a pipeline fails as a whole)
            with contextlib.suppress(CacheError):
                await commands.keyed(
                    "UNLINK", full, lambda target: target.execute_command("UNLINK", full)
                )
        raise_first_error(results)

    async def invalidate(self, tags: tuple[str, ...]) -> int:
        """Delete every key set with any of *tags*; the count of keys.

        Each tag record is read in one command, the keys it lists are deleted, and then
        only the records read are dropped: a key tagged again meanwhile keeps its record
        (its stamp is newer). So when this returns, no key whose tagged ``set`` returned
        before this call began is left — even while other invalidations of the same tag run
        — and a key tagged after the record was read is still found by the next call. Keys
        whose node failed keep their record (then the error is raised).
        """
        if not tags:
            return 0
        tag_keys = list(dict.fromkeys(self.tag_key(tag) for tag in tags))
        read = await self._commands.fan_out(
            "invalidate_tags",
            tag_keys,
            lambda pipe, i: pipe.zrange(tag_keys[i], 0, -1, withscores=True),
        )
        members = sorted(
            {member for reply in read if not isinstance(reply, CacheError) for member, _ in reply}
        )
        removed, failed, error = await self._commands.unlink_keys("invalidate_tags", members)
        kept = set(failed)
        forget: list[tuple[str, list[Any]]] = []
        for tag_key, reply in zip(tag_keys, read, strict=True):
            if not isinstance(reply, CacheError) and reply:
                highest = max(score for _, score in reply)
                forget.append((tag_key, [highest, *(m for m, _ in reply if m in kept)]))
        if forget:
            await self._commands.fan_out(
                "invalidate_tags",
                [tag_key for tag_key, _ in forget],
                lambda pipe, i: pipe.eval(_FORGET, 1, forget[i][0], *forget[i][1]),
            )  # a failure here leaves records of deleted keys: harmless, dropped next time
        raise_first_error(read)
        if error is not None:
            raise error
        return removed
