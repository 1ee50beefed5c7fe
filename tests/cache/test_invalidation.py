"""Invalidation channels over real Redis pub/sub: delivery, failover, reconnect after a kill."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from redline.cache.invalidation import (
    CHANNEL_ORIGIN,
    Invalidation,
    InvalidationMessage,
    LocalInvalidation,
    RedisInvalidation,
)
from redline.exceptions import CacheUnavailable, SerializationError
from tests._faultproxy import FaultProxy
from tests._services import HOST, RedisClusterServers, RedisServer, free_port


class Inbox:
    """Collects the messages a channel delivers."""

    def __init__(self) -> None:
        self.messages: list[InvalidationMessage] = []

    async def __call__(self, message: InvalidationMessage) -> None:
        self.messages.append(message)

    async def wait_for(
        self, predicate: Callable[[InvalidationMessage], bool]
    ) -> InvalidationMessage:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for message in self.messages:
                if predicate(message):
                    return message
            await asyncio.sleep(0.01)
        raise AssertionError(f"no matching message; got {self.messages}")


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def channel_name() -> str:
    return f"test-inv-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def channels() -> AsyncIterator[list[RedisInvalidation]]:
    """Channels a test made; closed afterwards."""
    made: list[RedisInvalidation] = []
    yield made
    for channel in made:
        await channel.close()


def test_messages_round_trip_through_the_wire_form() -> None:
    message = InvalidationMessage(origin="a", keys=("k1", "k2"), patterns=("p*",), tags=("t",))
    assert InvalidationMessage.decode(message.encode()) == message
    flush = InvalidationMessage(origin="b", flush=True)
    assert InvalidationMessage.decode(flush.encode().decode()) == flush
    for bad in (b"not json", b"[]", b'{"k": []}'):
        with pytest.raises(SerializationError, match="not an invalidation message"):
            InvalidationMessage.decode(bad)


def test_nodes_come_from_lists_and_urls() -> None:
    assert RedisInvalidation("redis://127.0.0.1:7000/0").nodes == [("127.0.0.1", 7000)]
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert RedisInvalidation(url).nodes == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert RedisInvalidation([("127.0.0.1", 1)]).nodes == [("127.0.0.1", 1)]
    with pytest.raises(ValueError, match="unknown cache URL scheme 'http'"):
        RedisInvalidation("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="at least one node"):
        RedisInvalidation([])
    with pytest.raises(ValueError, match=r"^ping_interval must be > 0, got 0$"):
        RedisInvalidation("redis://127.0.0.1:1", ping_interval=0)


async def test_local_invalidation_delivers_to_every_subscriber() -> None:
    channel = LocalInvalidation()
    first, second = Inbox(), Inbox()
    channel.subscribe(first)
    channel.subscribe(second)
    assert isinstance(channel, Invalidation)
    await channel.start()
    assert channel.connected
    message = InvalidationMessage(origin="x", keys=("k",))
    await channel.publish(message)
    assert first.messages == second.messages == [message]
    await channel.close()
    assert not channel.connected


async def test_a_message_reaches_another_subscriber_through_redis(
    redis_url: str, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    sender = RedisInvalidation(redis_url, channel_name)
    receiver = RedisInvalidation(redis_url, channel_name)
    channels += [sender, receiver]
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    assert receiver.connected
    message = InvalidationMessage(origin="sender", keys=("user:1",), patterns=("item:*",))
    await sender.publish(message)
    assert await inbox.wait_for(lambda m: m.origin == "sender") == message
    assert isinstance(receiver, Invalidation)
    assert "connected=True" in repr(receiver)


async def test_malformed_messages_are_ignored_and_the_subscription_survives(
    redis_server: RedisServer, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    receiver = RedisInvalidation(redis_server.url, channel_name)
    channels.append(receiver)
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    redis_server.cli("PUBLISH", channel_name, "garbage{")
    good = InvalidationMessage(origin="cli", keys=("k",))
    redis_server.cli("PUBLISH", channel_name, good.encode().decode())
    assert await inbox.wait_for(lambda m: m.origin == "cli") == good
    assert receiver.received == 2
    assert receiver.connected


async def test_a_killed_subscription_flushes_and_reconnects(
    fresh_redis: RedisServer, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    receiver = RedisInvalidation(fresh_redis.url, channel_name, backoff_initial=0.01)
    channels.append(receiver)
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    assert receiver.connected
    inbox.messages.clear()
    killed = fresh_redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed.strip() == "1"
    await inbox.wait_for(lambda m: m.flush and m.origin == CHANNEL_ORIGIN)
    await wait_until(lambda: receiver.connected and receiver.reconnects >= 1, "reconnect")
    flushes = [m for m in inbox.messages if m.flush]
    assert len(flushes) >= 2  # one on the loss, one on the way back
    client = aioredis.Redis(port=fresh_redis.port)
    try:
        await client.publish(
            channel_name, InvalidationMessage(origin="after", keys=("k",)).encode()
        )
    finally:
        await client.aclose()
    await inbox.wait_for(lambda m: m.origin == "after")


async def test_a_dead_server_flushes_and_the_channel_comes_back_with_it(
    fresh_redis: RedisServer, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    receiver = RedisInvalidation(
        fresh_redis.url, channel_name, backoff_initial=0.01, backoff_max=0.2
    )
    channels.append(receiver)
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    sender = RedisInvalidation(fresh_redis.url, channel_name)
    spare = RedisInvalidation(fresh_redis.url, channel_name)
    channels += [sender, spare]
    await sender.publish(InvalidationMessage(origin="before", keys=("k",)))
    await spare.publish(InvalidationMessage(origin="spare-before", keys=("k",)))
    await inbox.wait_for(lambda m: m.origin == "spare-before")
    inbox.messages.clear()
    fresh_redis.kill()
    await inbox.wait_for(lambda m: m.flush)
    await wait_until(lambda: not receiver.connected, "disconnect")
    with pytest.raises(CacheUnavailable, match="failed on every node"):  # and fast
        await sender.publish(InvalidationMessage(origin="lost", keys=("k",)))
    fresh_redis.start()
    await wait_until(lambda: receiver.connected, "reconnect")
    await sender.publish(InvalidationMessage(origin="back", keys=("k",)))
    await inbox.wait_for(lambda m: m.origin == "back")
    # spare still holds a connection from before the restart: its first message must arrive
    await spare.publish(InvalidationMessage(origin="spare-after", keys=("k",)))
    await inbox.wait_for(lambda m: m.origin == "spare-after")


async def test_fails_over_to_the_next_candidate_node(
    redis_url: str, redis_server: RedisServer, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    dead = ("127.0.0.1", free_port())
    receiver = RedisInvalidation(
        [dead, ("127.0.0.1", redis_server.port)], channel_name, backoff_initial=0.01
    )
    channels.append(receiver)
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    await wait_until(lambda: receiver.connected, "failover")
    sender = RedisInvalidation([dead, ("127.0.0.1", redis_server.port)], channel_name)
    channels.append(sender)
    await sender.publish(InvalidationMessage(origin="s", keys=("k",)))
    await inbox.wait_for(lambda m: m.origin == "s")


async def test_cluster_publish_on_one_node_reaches_a_subscriber_on_another(
    redis_cluster: RedisClusterServers, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    nodes = redis_cluster.startup_nodes
    receiver = RedisInvalidation([nodes[0]], channel_name)
    sender = RedisInvalidation([nodes[-1]], channel_name)
    channels += [receiver, sender]
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    assert receiver.connected
    await sender.publish(InvalidationMessage(origin="far", tags=("t",)))
    message = await inbox.wait_for(lambda m: m.origin == "far")
    assert message.tags == ("t",)


async def test_a_failing_callback_does_not_stop_delivery(
    redis_url: str, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    receiver = RedisInvalidation(redis_url, channel_name)
    channels.append(receiver)

    async def broken(message: InvalidationMessage) -> Any:
        raise RuntimeError("callback bug")

    inbox = Inbox()
    receiver.subscribe(broken)
    receiver.subscribe(inbox)
    await receiver.start()
    for origin in ("one", "two"):
        await receiver.publish(InvalidationMessage(origin=origin, keys=("k",)))
    await inbox.wait_for(lambda m: m.origin == "two")
    assert receiver.connected


async def test_tiered_url_carries_the_password_to_its_invalidation_channel(
    fresh_redis: RedisServer,
) -> None:
    from redline.cache.tiered import TieredCache
    from redline.cache.url import cache_from_url

    fresh_redis.cli("config", "set", "requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{fresh_redis.port}/0?tiered=1&namespace=auth"
    writer, reader = cache_from_url(url), cache_from_url(url)
    assert isinstance(writer, TieredCache)
    assert isinstance(reader, TieredCache)
    async with writer, reader:
        await writer.set("k", "v1")
        assert await reader.get("k") == "v1"  # now in the reader's L1
        await writer.set("k", "v2")
        deadline = time.monotonic() + 5
        while await reader.get("k") != "v2" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert await reader.get("k") == "v2"
        assert (await reader.health())["status"] == "ok"


# -- half-open links, bounded publishes, quiet logs (through the fault proxy) -------------


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy((HOST, redis_server.port)) as running:
        yield running


async def test_a_half_open_link_is_detected_by_the_heartbeat_and_flushes(
    proxy: FaultProxy, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    receiver = RedisInvalidation(
        [proxy.address], channel_name, ping_interval=0.2, backoff_initial=0.01, backoff_max=0.1
    )
    channels.append(receiver)
    inbox = Inbox()
    receiver.subscribe(inbox)
    await receiver.start()
    assert receiver.connected
    inbox.messages.clear()
    await asyncio.to_thread(proxy.set_mode, "blackhole")  # TCP stays open, nothing answers
    cut = time.monotonic()
    await inbox.wait_for(lambda m: m.flush and m.origin == CHANNEL_ORIGIN)
    detected = time.monotonic() - cut
    assert not receiver.connected
    print(f"half-open link detected after {detected:.2f} s (bound 2 x 0.2 s)")
    assert detected < 3  # the bound is 0.4 s; a generous "it was detected" check
    assert receiver.events.counts()["state:down"] == 1
    await asyncio.to_thread(proxy.set_mode, "pass")
    await wait_until(lambda: receiver.connected, "reconnect after the link healed")
    sender = RedisInvalidation([proxy.address], channel_name)
    channels.append(sender)
    await sender.publish(InvalidationMessage(origin="after", keys=("k",)))
    await inbox.wait_for(lambda m: m.origin == "after")


async def test_a_slow_link_is_not_counted_down_while_it_answers(
    proxy: FaultProxy, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    receiver = RedisInvalidation([proxy.address], channel_name, ping_interval=0.3)
    channels.append(receiver)
    await receiver.start()
    await asyncio.to_thread(proxy.set_mode, "delay", delay=0.1)
    await asyncio.sleep(1.5)
    assert receiver.connected
    assert receiver.reconnects == 0


async def test_a_publish_into_a_blackhole_gives_up_in_bounded_time(
    proxy: FaultProxy, channel_name: str, channels: list[RedisInvalidation]
) -> None:
    sender = RedisInvalidation([proxy.address], channel_name, publish_timeout=0.2)
    channels.append(sender)
    await sender.publish(InvalidationMessage(origin="warm", keys=("k",)))
    await asyncio.to_thread(proxy.set_mode, "blackhole")
    started = time.monotonic()
    with pytest.raises(CacheUnavailable, match="failed on every node"):
        await sender.publish(InvalidationMessage(origin="lost", keys=("k",)))
    assert time.monotonic() - started < 2  # 2 tries x 0.2 s; it was 2 x 2 s


async def test_writes_never_wait_for_a_cut_link_and_the_pending_go_out_when_it_heals(
    proxy: FaultProxy, redis_server: RedisServer, channel_name: str
) -> None:
    from redline.cache.memory import MemoryCache
    from redline.cache.tiered import TieredCache

    listener = RedisInvalidation(redis_server.url, channel_name)
    inbox = Inbox()
    listener.subscribe(inbox)
    await listener.start()
    channel = RedisInvalidation([proxy.address], channel_name, ping_interval=0.2)
    cache = TieredCache(MemoryCache(), MemoryCache(), invalidation=channel)
    try:
        await cache.start()
        await asyncio.to_thread(proxy.set_mode, "blackhole")
        longest = 0.0
        for i in range(200):
            started = time.monotonic()
            await cache.set(f"k{i % 10}", i)
            longest = max(longest, time.monotonic() - started)
            await asyncio.sleep(0.005)
        print(f"longest write with the link cut: {longest * 1000:.1f} ms")
        assert longest < 0.1  # no I/O on the write path at all (it was 4 s)
        assert 1 <= cache.pending_invalidations <= 10  # coalesced
        deadline = time.monotonic() + 15
        while (await cache.health())["publishing"]:  # its breaker opens after 2 failures
            assert time.monotonic() < deadline, "the publisher never noticed the cut link"
            await asyncio.sleep(0.05)
        assert (await cache.health())["status"] == "degraded"
        await asyncio.to_thread(proxy.set_mode, "pass")
        assert await cache.wait_published(15)
        message = await inbox.wait_for(lambda m: m.origin == cache.instance_id and "k9" in m.keys)
        assert len(message.keys) <= 10
    finally:
        await cache.close()
        await listener.close()


async def test_close_sends_the_pending_invalidations_or_gives_up_in_bounded_time(
    proxy: FaultProxy, redis_server: RedisServer, channel_name: str
) -> None:
    from redline.cache.memory import MemoryCache
    from redline.cache.tiered import TieredCache

    listener = RedisInvalidation(redis_server.url, channel_name)
    inbox = Inbox()
    listener.subscribe(inbox)
    await listener.start()
    try:
        cache = TieredCache(
            MemoryCache(),
            MemoryCache(),
            invalidation=RedisInvalidation(redis_server.url, channel_name),
        )
        await cache.start()
        await cache.set("k", 1)
        await cache.close()  # right after the write: the message still goes out
        await inbox.wait_for(lambda m: m.origin == cache.instance_id)
        cut = TieredCache(
            MemoryCache(),
            MemoryCache(),
            invalidation=RedisInvalidation([proxy.address], channel_name),
            publish_timeout=0.3,
        )
        await cut.start()
        await asyncio.to_thread(proxy.set_mode, "blackhole")
        await cut.set("k", 2)
        started = time.monotonic()
        await cut.close()
        assert time.monotonic() - started < 3  # bounded by publish_timeout, not by Redis
        assert cut.stats().tier("tiered").events.get("failure:close") == 1
    finally:
        await listener.close()


async def test_an_outage_logs_a_few_lines_whatever_the_write_rate(
    fresh_redis: RedisServer, channel_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from redline.cache.memory import MemoryCache
    from redline.cache.tiered import TieredCache

    channel = RedisInvalidation(
        fresh_redis.url, channel_name, ping_interval=0.2, backoff_initial=0.01, backoff_max=0.1
    )
    cache = TieredCache(MemoryCache(), MemoryCache(), invalidation=channel)
    try:
        await cache.start()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="redline.cache"):
            await asyncio.to_thread(fresh_redis.kill)
            deadline = time.monotonic() + 2
            writes = 0
            while time.monotonic() < deadline:
                await cache.set(f"k{writes % 50}", writes)
                writes += 1
                await asyncio.sleep(0.001)
            await asyncio.to_thread(fresh_redis.start)
            await wait_until(lambda: channel.connected, "reconnect")
            assert await cache.wait_published(15)
        lines = [r for r in caplog.records if r.name.startswith("redline.cache")]
        events = cache.stats().tier("tiered").events
        print(f"{writes} writes during the outage -> {len(lines)} log lines; events {events}")
        for line in lines:
            print("   ", line.levelname, line.getMessage()[:150])
        assert events["state:down"] == 1
        assert events.get("failure:subscribe", 0) + events.get("failure:publish", 0) >= 2
        assert len(lines) <= 8  # link: down, first failure, up; publisher: the same
    finally:
        await cache.close()
