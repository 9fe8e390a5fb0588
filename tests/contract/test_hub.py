"""The Hub contract: the in-process hub and the Redis hub pass the same tests through the port,
and the Redis hub, which spans processes, passes the tests of a cluster as well: two nodes, users
who share a shard channel, a lost connection, garbage on its channels.

The Redis half needs the server of TIDINGS_TEST_REDIS_URL (default: the local one); each test
uses its own channel prefix. Where the server cannot be reached that half is skipped with the
reason, except under CI=true, where it fails.

Waiting is for events that must come; that an event does NOT come is shown by a later event on
the same pub/sub connection (Redis keeps the order of one connection's messages): when it
arrives, anything published before it would have arrived first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import REDIS_URL, require_redis
from tidings.adapters.hub.memory import MemoryHub
from tidings.adapters.hub.redis import RedisHub
from tidings.domain.errors import NotConfigured, Unavailable
from tidings.domain.stream import (
    CLOSE_UNAUTHENTICATED,
    CREATED,
    READ,
    RESYNC,
    Kick,
    StreamEvent,
)
from tidings.ports import Hub

WAIT = 10.0  # a deadline for what should take milliseconds, not a measurement
AT = datetime(2026, 11, 21, 9, 30, 15, 123456, tzinfo=UTC)
SHARDS = 16  # the Redis hub's shard channels per app, unless it is told otherwise


def shard(user: str, shards: int = SHARDS) -> int:
    """Computed here rather than asked of the hub: every node, of every version that speaks the
    same format, must put a user on the same channel."""
    return zlib.crc32(user.encode()) % shards


def shard_mates(user: str, n: int) -> list[str]:
    """`n` other user ids of the shard of `user`."""
    mates = (f"{user}-{i}" for i in range(100_000))
    return [m for m in mates if shard(m) == shard(user)][:n]


def of_another_shard(user: str) -> str:
    return next(f"{user}-{i}" for i in range(100) if shard(f"{user}-{i}") != shard(user))


def event(user: str = "alice", seq: int = 1, app: str = "acme", kind: str = CREATED,
          **data: Any) -> StreamEvent:
    return StreamEvent(app, user, seq, kind, {"id": f"n{seq}", "title": "Hi", **data}, AT,
                       unread=seq + 1, unread_in_app=seq)


class Listener:
    """A subscriber's `deliver`: keeps what arrives, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamEvent] = asyncio.Queue()

    def __call__(self, ev: StreamEvent) -> None:
        self.queue.put_nowait(ev)

    async def next(self) -> StreamEvent:
        return await asyncio.wait_for(self.queue.get(), WAIT)

    def waiting(self) -> list[StreamEvent]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


@dataclass
class Node:
    hub: Any
    kicks: list[Kick] = field(default_factory=list)


class Nodes:
    """Starts hubs of one kind; Redis hubs share one channel prefix, like the nodes of a cluster."""

    def __init__(self, kind: str, url: str | None = None) -> None:
        self.kind = kind
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:10]}"
        self.started: list[Node] = []

    async def node(self, url: str | None = None, **options: Any) -> Node:
        hub: Hub = (MemoryHub() if self.kind == "memory"
                    else RedisHub(url or self.url or REDIS_URL, self.prefix, **options))
        node = Node(hub)
        await hub.start(node.kicks.append)
        self.started.append(node)
        return node

    def channel(self, user: str = "alice", app: str = "acme", shards: int = SHARDS) -> str:
        return f"{self.prefix}:s:{app}:{shard(user, shards)}"

    async def close(self) -> None:
        for node in self.started:
            await node.hub.close()


@pytest.fixture(params=["memory", "redis"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    url = require_redis() if request.param == "redis" else None
    n = Nodes(str(request.param), url)
    yield n
    await n.close()


@pytest.fixture
async def cluster() -> AsyncIterator[Nodes]:
    n = Nodes("redis", require_redis())
    yield n
    await n.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(require_redis())
    yield client
    await client.aclose()


async def numsub(redis: Redis, channel: str) -> int:
    (_, count), = await redis.pubsub_numsub(channel)
    return int(count)


async def until(check: Callable[[], Any], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still not {what} after {WAIT} s")
        await asyncio.sleep(0.02)


async def subscriber_ids(redis: Redis, hub: RedisHub) -> list[int]:
    return [int(c["id"]) for c in await redis.client_list() if c.get("name") == f"{hub.name}:sub"]


# -- the contract, for every hub ---------------------------------------------------------

async def test_an_event_reaches_the_users_subscriber_as_published(nodes: Nodes) -> None:
    node = await nodes.node()
    alice = Listener()
    await node.hub.subscribe("acme", "alice", alice)
    sent = event(body="x" * 300, nested={"a": [1, 2.5, None, True]})
    sent.wire["ws"] = b"rendered for this node only"
    await node.hub.publish([sent])
    got = await alice.next()
    assert got == sent  # every field but `wire`, the datetime included
    assert got.at == AT and got.at.tzinfo is not None


async def test_every_subscriber_of_a_user_gets_every_event_in_order(nodes: Nodes) -> None:
    node = await nodes.node()
    phone, tab1, tab2 = Listener(), Listener(), Listener()
    for listener in (phone, tab1, tab2):
        await node.hub.subscribe("acme", "alice", listener)
    batch = [event(seq=1), event(seq=2, kind=READ), event(seq=3)]
    await node.hub.publish(batch)
    for listener in (phone, tab1, tab2):
        assert [await listener.next() for _ in batch] == batch
        assert listener.waiting() == []


async def test_other_users_and_other_apps_get_nothing(nodes: Nodes) -> None:
    node = await nodes.node()
    alice, bob, alice_of_globex, alice2 = Listener(), Listener(), Listener(), Listener()
    await node.hub.subscribe("acme", "alice", alice)
    await node.hub.subscribe("acme", "bob", bob)
    await node.hub.subscribe("globex", "alice", alice_of_globex)
    await node.hub.subscribe("acme", "alice2", alice2)  # a user id that begins like another
    await node.hub.publish([event("alice", seq=7)])
    assert await alice.next() == event("alice", seq=7)
    # The first thing each of the others receives is its own event, not alice's.
    await node.hub.publish([event("bob", seq=1), event("alice", seq=1, app="globex"),
                            event("alice2", seq=1)])
    assert await bob.next() == event("bob", seq=1)
    assert await alice_of_globex.next() == event("alice", seq=1, app="globex")
    assert await alice2.next() == event("alice2", seq=1)
    assert alice.waiting() == []


async def test_a_batch_of_many_users_reaches_each_of_them(nodes: Nodes) -> None:
    node = await nodes.node()
    listeners = {f"u{i}": Listener() for i in range(1200)}  # all shards, many users a message
    for user, listener in listeners.items():
        await node.hub.subscribe("acme", user, listener)
    await node.hub.publish([event(user, seq=1) for user in listeners])
    for user, listener in listeners.items():
        assert await listener.next() == event(user, seq=1)


async def test_unsubscribe_stops_delivery_to_that_subscriber_only(nodes: Nodes) -> None:
    node = await nodes.node()
    phone, tab, bob = Listener(), Listener(), Listener()
    phone_sub = await node.hub.subscribe("acme", "alice", phone)
    tab_sub = await node.hub.subscribe("acme", "alice", tab)
    await node.hub.subscribe("acme", "bob", bob)
    await node.hub.unsubscribe(phone_sub)
    await node.hub.publish([event(seq=1)])
    assert await tab.next() == event(seq=1)
    await node.hub.unsubscribe(tab_sub)
    await node.hub.unsubscribe(tab_sub)  # twice is harmless
    await node.hub.publish([event(seq=2), event("bob", seq=1)])
    assert await bob.next() == event("bob", seq=1)
    assert phone.waiting() == [] and tab.waiting() == []


async def test_leaving_and_coming_back_at_once_keeps_the_user_subscribed(nodes: Nodes) -> None:
    node = await nodes.node()
    first, second = Listener(), Listener()
    sub = await node.hub.subscribe("acme", "alice", first)
    _, again = await asyncio.gather(node.hub.unsubscribe(sub),
                                    node.hub.subscribe("acme", "alice", second))
    await node.hub.publish([event(seq=1)])
    assert await second.next() == event(seq=1)
    assert again.app_id == "acme" and again.user_id == "alice"
    assert first.waiting() == []


async def test_a_raising_subscriber_does_not_stop_the_others(
        nodes: Nodes, caplog: pytest.LogCaptureFixture) -> None:
    node = await nodes.node()
    before, after = Listener(), Listener()

    def broken(ev: StreamEvent) -> None:
        raise RuntimeError("this connection is broken")

    await node.hub.subscribe("acme", "alice", before)
    await node.hub.subscribe("acme", "alice", broken)
    await node.hub.subscribe("acme", "alice", after)
    with caplog.at_level(logging.ERROR, logger="tidings.hub"):
        await node.hub.publish([event(seq=1)])
        assert await before.next() == event(seq=1)
        assert await after.next() == event(seq=1)
        await node.hub.publish([event(seq=2)])  # and the hub goes on delivering
        assert await after.next() == event(seq=2)
    assert any("this connection is broken" in (r.exc_text or "") for r in caplog.records)


async def test_a_kick_reaches_on_kick(nodes: Nodes) -> None:
    node = await nodes.node()
    kick = Kick(CLOSE_UNAUTHENTICATED, "key revoked", app_id="acme", key_id="k1")
    await node.hub.kick(kick)
    assert node.kicks == [kick]


async def test_close_leaves_no_task_behind(nodes: Nodes) -> None:
    before = asyncio.all_tasks()
    node = await nodes.node()
    await node.hub.subscribe("acme", "alice", Listener())
    await node.hub.close()
    assert asyncio.all_tasks() == before


# -- a cluster: the Redis hub between nodes --------------------------------------------

async def test_subscribe_returns_once_redis_has_the_subscription(
        cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node()
    await node.hub.subscribe("acme", "alice", Listener())
    assert await numsub(redis, cluster.channel()) == 1  # no waiting: it is live already
    assert await numsub(redis, f"{cluster.prefix}:kick") == 1


async def test_users_of_one_shard_share_its_channel_and_its_confirmation(
        cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node()
    users = ["alice", *shard_mates("alice", 3)]
    listeners = [Listener() for _ in users]
    await asyncio.gather(*(node.hub.subscribe("acme", user, listener)
                           for user, listener in zip(users, listeners, strict=True)))
    assert await numsub(redis, cluster.channel()) == 1  # live for every one of them
    assert await numsub(redis, f"{cluster.prefix}:s:acme:{(shard('alice') + 1) % SHARDS}") == 0
    await node.hub.publish([event(user, seq=1) for user in users])
    for user, listener in zip(users, listeners, strict=True):
        assert await listener.next() == event(user, seq=1)
        assert listener.waiting() == []


async def test_a_user_of_a_shard_being_subscribed_waits_for_its_confirmation(
        cluster: Nodes) -> None:
    link = SilentLink(cluster.url or REDIS_URL)
    try:
        node = await cluster.node(url=await link.start(), timeout=0.5)
        link.freeze()  # from now on Redis hears nothing of this node, and it nothing of Redis
        first = asyncio.create_task(node.hub.subscribe("acme", "alice", Listener()))
        await asyncio.sleep(0)  # its SUBSCRIBE is on its way
        mate, = shard_mates("alice", 1)
        with pytest.raises(Unavailable):
            await node.hub.subscribe("acme", mate, Listener())
        with pytest.raises(Unavailable):
            await first
        await node.hub.close()
    finally:
        await link.close()


async def test_users_who_share_a_shard_channel_get_only_their_own_events(cluster: Nodes) -> None:
    a, b = await cluster.node(), await cluster.node()
    bob, carol = shard_mates("alice", 2)
    alice_on_a, carol_on_a, bob_on_b, alice_of_globex = Listener(), Listener(), Listener(), Listener()
    await a.hub.subscribe("acme", "alice", alice_on_a)
    await a.hub.subscribe("acme", carol, carol_on_a)
    await b.hub.subscribe("acme", bob, bob_on_b)
    await b.hub.subscribe("globex", "alice", alice_of_globex)  # the same shard of another app
    await a.hub.publish([event("alice", seq=1)])
    assert await alice_on_a.next() == event("alice", seq=1)
    # Both nodes received alice's event on the shared channel; the first thing each of the
    # others receives is its own event.
    await a.hub.publish([event(carol, seq=1), event(bob, seq=1),
                         event("alice", seq=1, app="globex")])
    assert await carol_on_a.next() == event(carol, seq=1)
    assert await bob_on_b.next() == event(bob, seq=1)
    assert await alice_of_globex.next() == event("alice", seq=1, app="globex")
    await b.hub.publish([event(bob, seq=2), event("alice", seq=2), event(bob, seq=3)])
    assert [await bob_on_b.next(), await bob_on_b.next()] == [event(bob, seq=2), event(bob, seq=3)]
    assert await alice_on_a.next() == event("alice", seq=2)
    for listener in (alice_on_a, carol_on_a, bob_on_b, alice_of_globex):
        assert listener.waiting() == []


async def test_a_shard_channel_is_left_with_its_last_local_user(
        cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node()
    bob, = shard_mates("alice", 1)
    on_bob = Listener()
    phone = await node.hub.subscribe("acme", "alice", Listener())
    tab = await node.hub.subscribe("acme", "alice", Listener())
    bobs = await node.hub.subscribe("acme", bob, on_bob)
    assert await numsub(redis, cluster.channel()) == 1  # one pub/sub connection per process
    await node.hub.unsubscribe(phone)
    await node.hub.unsubscribe(tab)
    # Redis answers commands in order: once it confirmed a later SUBSCRIBE on the same connection,
    # it would have acted on an UNSUBSCRIBE sent before.
    elsewhere = of_another_shard("alice")
    await node.hub.subscribe("acme", elsewhere, Listener())
    assert await numsub(redis, cluster.channel()) == 1  # bob is still held here
    await node.hub.publish([event(bob, seq=1)])
    assert await on_bob.next() == event(bob, seq=1)
    await node.hub.unsubscribe(bobs)

    async def left() -> bool:
        return await numsub(redis, cluster.channel()) == 0
    await until(left, "unsubscribed")
    assert await numsub(redis, cluster.channel(elsewhere)) == 1


async def test_an_event_published_on_one_node_reaches_every_node_once(cluster: Nodes) -> None:
    a, b = await cluster.node(), await cluster.node()
    bob, = shard_mates("alice", 1)
    on_a, on_b, bob_on_a = Listener(), Listener(), Listener()
    await a.hub.subscribe("acme", "alice", on_a)
    await a.hub.subscribe("acme", bob, bob_on_a)
    await b.hub.subscribe("acme", "alice", on_b)
    await a.hub.publish([event(seq=1), event(bob, seq=1)])
    assert await on_b.next() == event(seq=1)
    assert await on_a.next() == event(seq=1)  # its own node too, through Redis
    assert await bob_on_a.next() == event(bob, seq=1)
    await b.hub.publish([event(seq=2), event(bob, seq=2)])
    assert await on_a.next() == event(seq=2)  # not a second copy of 1
    assert await on_b.next() == event(seq=2)
    assert await bob_on_a.next() == event(bob, seq=2)
    assert on_a.waiting() == [] and on_b.waiting() == [] and bob_on_a.waiting() == []


async def test_a_kick_reaches_every_node_once(cluster: Nodes) -> None:
    a, b = await cluster.node(), await cluster.node()
    on_a, on_b = Listener(), Listener()
    await a.hub.subscribe("acme", "flush", on_a)
    await b.hub.subscribe("acme", "flush", on_b)
    kick = Kick(CLOSE_UNAUTHENTICATED, "key revoked", app_id="acme", key_id="k1")
    await a.hub.kick(kick)
    # A later message through Redis has passed each node's reader after the kick did.
    await b.hub.publish([event("flush", seq=1)])
    assert await on_a.next() == event("flush", seq=1)
    assert await on_b.next() == event("flush", seq=1)
    assert a.kicks == [kick] and b.kicks == [kick]


async def test_a_batch_travels_as_one_message_per_shard(cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node()
    users = [f"u{i}" for i in range(200)]
    batch = [*(event(user, seq=1) for user in users), event("u0", seq=2),
             event("alice", seq=1, app="globex")]
    groups = {(e.app_id, shard(e.user_id)) for e in batch}
    assert len(groups) == SHARDS + 1
    async with redis.pubsub() as raw:
        await raw.psubscribe(f"{cluster.prefix}:s:*")
        assert (await raw.get_message(timeout=WAIT))["type"] == "psubscribe"
        await node.hub.publish(batch)
        await redis.publish(f"{cluster.prefix}:s:end:0", b"end")  # after the hub's messages
        messages = []
        while (m := await raw.get_message(timeout=WAIT))["data"] != b"end":
            messages.append(m)
    assert len(messages) == len(groups)
    seen = []
    for m in messages:
        doc = orjson.loads(m["data"])
        assert doc[0] == 2
        assert m["channel"].decode() == f"{cluster.prefix}:s:{doc[1]}:{doc[2]}"
        assert {shard(e[0]) for e in doc[3]} == {doc[2]}
        seen += [(doc[1], e[0], e[1]) for e in doc[3]]
    assert sorted(seen) == sorted((e.app_id, e.user_id, e.seq) for e in batch)
    assert seen.index(("acme", "u0", 1)) < seen.index(("acme", "u0", 2))
    # The format other nodes (of this version and the next) read: the fields once, no keys.
    (globex,) = [m["data"] for m in messages if m["channel"].endswith(b":globex:7")]
    assert orjson.loads(globex) == [2, "globex", 7, [["alice", 1, CREATED, {"id": "n1", "title": "Hi"},
                                                      "2026-11-21T09:30:15.123456+00:00", 2, 1]]]


async def test_a_large_batch_is_cut_into_messages_of_at_most_1000_events(
        cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node(shards=1)
    batch = [event(f"u{i}", seq=1) for i in range(2499)] + [event("u1", seq=2)]
    listener = Listener()
    await node.hub.subscribe("acme", "u1", listener)
    async with redis.pubsub() as raw:
        await raw.subscribe(f"{cluster.prefix}:s:acme:0")
        assert (await raw.get_message(timeout=WAIT))["type"] == "subscribe"
        await node.hub.publish(batch)
        docs = [orjson.loads((await raw.get_message(timeout=WAIT))["data"]) for _ in range(3)]
    assert [len(doc[3]) for doc in docs] == [1000, 1000, 500]
    assert [(e[0], e[1]) for doc in docs for e in doc[3]] == [(e.user_id, e.seq) for e in batch]
    assert [await listener.next(), await listener.next()] == [event("u1", seq=1),
                                                              event("u1", seq=2)]


async def test_the_messages_of_a_batch_arrive_back_to_back(cluster: Nodes, redis: Redis) -> None:
    a, b = await cluster.node(), await cluster.node()
    users = [f"u{i}" for i in range(1000)]
    pad = "x" * 1000  # large messages, which Redis would read a piece of each client at a time
    batches = [[event(user, seq=k, pad=pad) for user in users] for k in range(1, 9)]
    async with redis.pubsub() as raw:
        await raw.psubscribe(f"{cluster.prefix}:s:*")
        assert (await raw.get_message(timeout=WAIT))["type"] == "psubscribe"
        await asyncio.gather(*(hub.publish(batch) for hub, batch in
                               zip([a.hub, b.hub] * 4, batches, strict=True)))
        order = []
        for _ in range(len(batches) * SHARDS):
            doc = orjson.loads((await raw.get_message(timeout=WAIT))["data"])
            (seq,) = {e[1] for e in doc[3]}
            order.append(seq)
    runs = [seq for i, seq in enumerate(order) if i == 0 or order[i - 1] != seq]
    assert sorted(runs) == list(range(1, 9)), order


async def test_malformed_and_misaddressed_messages_are_logged_and_dropped(
        cluster: Nodes, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    node = await cluster.node()
    alice, bob = Listener(), Listener()
    elsewhere = of_another_shard("alice")
    await node.hub.subscribe("acme", "alice", alice)
    await node.hub.subscribe("acme", elsewhere, bob)  # held here, but on another shard channel
    k = shard("alice")

    def on_alices(*items: Any, fmt: int = 2, app: str = "acme", at: Any = k) -> bytes:
        return orjson.dumps([fmt, app, at, list(items)])

    ok = ["alice", 9, CREATED, {}, AT, 0, 0]
    bad: list[Any] = [
        b"not json", b"\xff\xfe", b"{}", b"[]", orjson.dumps([2, "acme", k, 5]),
        on_alices(ok, fmt=1), on_alices(ok, fmt=3),  # formats this node does not speak
        on_alices(ok, app="globex"), on_alices(ok, at=(k + 1) % SHARDS), on_alices(ok, at=str(k)),
        on_alices([elsewhere, *ok[1:]]),  # a user held here, but not of this shard
        on_alices(["alice", 9, CREATED, {}, "not a date", 0, 0]),
        on_alices(["alice", "9", CREATED, {}, AT, 0, 0]),
        on_alices(["alice", 9, CREATED, [], AT, 0, 0]),
        on_alices(["alice", 9, CREATED, {}, AT, 0]),
        on_alices(ok[1:]),
        on_alices([None, *ok[1:]]), on_alices([["alice"], *ok[1:]]),
        on_alices({"user_id": "alice", "seq": 9}),
        on_alices(["alice", 8, CREATED, {}, AT, 0, 0], [elsewhere, *ok[1:]]),  # one bad: all go
    ]
    with caplog.at_level(logging.WARNING, logger="tidings.hub"):
        for payload in bad:
            await redis.publish(cluster.channel(), payload)
        kicks = f"{cluster.prefix}:kick"
        await redis.publish(kicks, b"[2, \"x\", \"4401\", \"r\", null, null, null]")
        await redis.publish(kicks, b"[1, \"x\", 4401, \"r\", null, null, null]")
        await redis.publish(kicks, b"garbage")
        await redis.publish(cluster.channel(), on_alices(ok))
        got = await alice.next()
    assert (got.user_id, got.seq, got.at) == ("alice", 9, AT)
    assert alice.waiting() == [] and bob.waiting() == [] and node.kicks == []
    dropped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(dropped) == len(bad) + 3
    assert any("same number of shards" in r.getMessage() for r in dropped)


async def test_a_raising_subscriber_does_not_stop_the_rest_of_a_message(
        cluster: Nodes, caplog: pytest.LogCaptureFixture) -> None:
    node = await cluster.node()
    bob, = shard_mates("alice", 1)
    on_alice, on_bob = Listener(), Listener()

    def broken(ev: StreamEvent) -> None:
        raise RuntimeError("this connection is broken")

    await node.hub.subscribe("acme", "alice", broken)
    await node.hub.subscribe("acme", "alice", on_alice)
    await node.hub.subscribe("acme", bob, on_bob)
    with caplog.at_level(logging.ERROR, logger="tidings.hub"):
        await node.hub.publish([event(seq=1), event(bob, seq=1), event(seq=2)])  # one message
        assert [await on_alice.next(), await on_alice.next()] == [event(seq=1), event(seq=2)]
        assert await on_bob.next() == event(bob, seq=1)
    assert sum("this connection is broken" in (r.exc_text or "") for r in caplog.records) == 2


async def test_the_number_of_shards_is_the_hubs_to_choose_within_bounds(
        cluster: Nodes, redis: Redis) -> None:
    for wrong in (0, -1, 1025, 2.0, "16"):
        with pytest.raises(NotConfigured):
            RedisHub(cluster.url or REDIS_URL, cluster.prefix, shards=wrong)  # type: ignore[arg-type]
    a, b = await cluster.node(shards=1), await cluster.node(shards=1)
    alice, bob = Listener(), Listener()
    await a.hub.subscribe("acme", "alice", alice)
    await a.hub.subscribe("acme", "bob", bob)
    assert await numsub(redis, f"{cluster.prefix}:s:acme:0") == 1  # every user on one channel
    await b.hub.publish([event("bob", seq=1), event("alice", seq=1)])
    assert await bob.next() == event("bob", seq=1)
    assert await alice.next() == event("alice", seq=1)


async def test_the_reader_reconnects_and_subscribes_again(
        cluster: Nodes, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    a, b = await cluster.node(), await cluster.node()
    alice, mate, back_again = Listener(), Listener(), Listener()
    gone = of_another_shard("alice")
    mate_id, left_mate = shard_mates("alice", 2)
    await a.hub.subscribe("acme", "alice", alice)
    left = [await a.hub.subscribe("acme", gone, Listener()),
            await a.hub.subscribe("acme", left_mate, Listener())]
    (old,) = await subscriber_ids(redis, a.hub)
    for sub in left:
        await a.hub.unsubscribe(sub)
    with caplog.at_level(logging.WARNING, logger="tidings.hub"):
        await redis.client_kill_filter(_id=str(old))

        async def back() -> bool:
            ids = await subscriber_ids(redis, a.hub)
            return bool(ids) and ids != [old] and await numsub(redis, cluster.channel()) == 1
        await until(back, "subscribed again")
    assert any("lost" in r.getMessage() for r in caplog.records)
    assert await numsub(redis, cluster.channel(gone)) == 0  # only channels still wanted

    async def kick_channel_back() -> bool:
        return await numsub(redis, f"{cluster.prefix}:kick") == 2
    await until(kick_channel_back, "kick channel subscribed again")
    # Back: alice's stream is told to read from the store what it may have missed meanwhile.
    marker = await alice.next()
    assert (marker.type, marker.app_id, marker.user_id) == (RESYNC, "acme", "alice")
    await b.hub.publish([event(seq=1)])
    assert await alice.next() == event(seq=1)
    await a.hub.subscribe("acme", mate_id, mate)  # after the reconnect: of a shard held here
    await a.hub.subscribe("acme", gone, back_again)  # and of a shard no longer held here
    await b.hub.publish([event(mate_id, seq=1), event(gone, seq=1)])
    assert await mate.next() == event(mate_id, seq=1)
    assert await back_again.next() == event(gone, seq=1)
    kick = Kick(CLOSE_UNAUTHENTICATED, "user deleted", app_id="acme", user_id="alice")
    await b.hub.kick(kick)
    await b.hub.publish([event(seq=2)])
    assert await alice.next() == event(seq=2)
    assert a.kicks == [kick]


async def test_more_shard_channels_than_one_subscribe_holds_come_back_after_a_reconnect(
        cluster: Nodes, redis: Redis) -> None:
    shards = 1024
    a, b = await cluster.node(shards=shards), await cluster.node(shards=shards)
    users: dict[int, str] = {}
    for i in range(100_000):
        users.setdefault(shard(f"u{i}", shards), f"u{i}")
        if len(users) == 600:
            break
    held = [(app, user) for app in ("acme", "globex") for user in users.values()]
    listeners = {key: Listener() for key in held}
    for (app, user), listener in listeners.items():
        await a.hub.subscribe(app, user, listener)
    channels = [cluster.channel(user, app, shards) for app, user in held]
    assert len(set(channels)) == 1200  # more than one SUBSCRIBE of the reconnect takes
    (old,) = await subscriber_ids(redis, a.hub)
    await redis.client_kill_filter(_id=str(old))

    async def back() -> bool:
        ids = await subscriber_ids(redis, a.hub)
        counts = await redis.pubsub_numsub(*channels)
        return bool(ids) and ids != [old] and all(int(c) == 1 for _, c in counts)
    await until(back, "every shard channel subscribed again")
    await b.hub.publish([event(user, seq=1, app=app) for app, user in held])
    for (app, user), listener in listeners.items():
        marker = await listener.next()
        assert (marker.type, marker.app_id, marker.user_id) == (RESYNC, app, user)
        assert await listener.next() == event(user, seq=1, app=app)


class SilentLink:
    """A TCP relay to Redis whose connections can go quiet: they stay open but pass nothing on,
    like a connection whose network path died without a word. New connections pass normally."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.db = parsed.path or "/0"
        self.frozen: set[int] = set()
        self.links: list[tuple[int, asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self.db}"

    def freeze(self) -> None:
        self.frozen.update(link for link, _, _ in self.links)

    async def _link(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        link = len(self.links)
        self.links.append((link, client_w, server_w))
        for r, w in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pump(link, r, w))
            self.pumps.add(task)
            task.add_done_callback(self.pumps.discard)

    async def _pump(self, link: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            if link not in self.frozen:
                w.write(data)
        w.close()

    async def close(self) -> None:
        self.server.close()
        for _, a, b in self.links:
            a.close()
            b.close()
        for task in list(self.pumps):
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        await self.server.wait_closed()


async def test_a_connection_that_goes_silent_is_found_by_ping_and_replaced(
        cluster: Nodes, redis: Redis) -> None:
    link = SilentLink(cluster.url or REDIS_URL)
    try:
        a = await cluster.node(url=await link.start(), ping_every=0.2)
        b = await cluster.node()
        alice = Listener()
        await a.hub.subscribe("acme", "alice", alice)
        (old,) = await subscriber_ids(redis, a.hub)
        link.freeze()

        async def replaced() -> bool:
            ids = await subscriber_ids(redis, a.hub)
            return bool(ids) and old not in ids and await numsub(redis, cluster.channel()) == 1
        await until(replaced, "reconnected and subscribed again")
        await b.hub.publish([event(seq=1)])
        assert (await alice.next()).type == RESYNC
        assert await alice.next() == event(seq=1)
        await a.hub.close()
    finally:
        await link.close()


async def test_without_redis_publishing_raises_unavailable_and_nothing_hangs() -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = asyncio.all_tasks()
    hub = RedisHub(f"redis://127.0.0.1:{port}/0", f"test-{uuid.uuid4().hex[:10]}", timeout=0.5)
    kicks: list[Kick] = []
    await hub.start(kicks.append)  # comes up, and keeps trying in the background
    with pytest.raises(Unavailable):
        await hub.publish([event()])
    with pytest.raises(Unavailable):
        await hub.subscribe("acme", "alice", Listener())
    kick = Kick(CLOSE_UNAUTHENTICATED, "key revoked", key_id="k1")
    with pytest.raises(Unavailable):
        await hub.kick(kick)
    assert kicks == [kick]  # this node's own streams close all the same
    await hub.close()
    assert asyncio.all_tasks() == before
