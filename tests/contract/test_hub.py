"""The Hub contract: the in-process hub and the Redis hub pass the same tests through the port,
and the Redis hub, which spans processes, passes the tests of a cluster as well: two nodes, a
lost connection, garbage on its channels.

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
from tidings.domain.errors import Unavailable
from tidings.domain.stream import CLOSE_UNAUTHENTICATED, CREATED, READ, Kick, StreamEvent
from tidings.ports import Hub

WAIT = 10.0  # a deadline for what should take milliseconds, not a measurement
AT = datetime(2026, 11, 21, 9, 30, 15, 123456, tzinfo=UTC)


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

    def channel(self, user: str = "alice", app: str = "acme") -> str:
        return f"{self.prefix}:u:{app}:{user}"

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
    listeners = {f"u{i}": Listener() for i in range(1200)}  # more than one SUBSCRIBE batch
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


async def test_a_user_channel_is_left_with_its_last_local_subscriber(
        cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node()
    phone = await node.hub.subscribe("acme", "alice", Listener())
    tab = await node.hub.subscribe("acme", "alice", Listener())
    assert await numsub(redis, cluster.channel()) == 1  # one pub/sub connection per process
    await node.hub.unsubscribe(phone)
    await node.hub.publish([event(seq=1)])  # a round trip after the unsubscribe, if one was sent
    assert await numsub(redis, cluster.channel()) == 1
    await node.hub.unsubscribe(tab)

    async def left() -> bool:
        return await numsub(redis, cluster.channel()) == 0
    await until(left, "unsubscribed")


async def test_an_event_published_on_one_node_reaches_every_node_once(cluster: Nodes) -> None:
    a, b = await cluster.node(), await cluster.node()
    on_a, on_b = Listener(), Listener()
    await a.hub.subscribe("acme", "alice", on_a)
    await b.hub.subscribe("acme", "alice", on_b)
    await a.hub.publish([event(seq=1)])
    assert await on_b.next() == event(seq=1)
    assert await on_a.next() == event(seq=1)  # its own node too, through Redis
    await b.hub.publish([event(seq=2)])
    assert await on_a.next() == event(seq=2)  # not a second copy of 1
    assert await on_b.next() == event(seq=2)
    assert on_a.waiting() == [] and on_b.waiting() == []


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


async def test_each_users_events_of_a_batch_travel_as_one_small_message(
        cluster: Nodes, redis: Redis) -> None:
    node = await cluster.node()
    async with redis.pubsub() as raw:
        await raw.subscribe(cluster.channel("alice"), cluster.channel("bob"))
        for _ in range(2):
            assert (await raw.get_message(timeout=WAIT))["type"] == "subscribe"
        batch = [event("alice", seq=1), event("bob", seq=1), event("alice", seq=2)]
        await node.hub.publish(batch)
        messages = [await raw.get_message(timeout=WAIT) for _ in range(2)]
    raw_by_channel = {m["channel"].decode(): m["data"] for m in messages}
    alice = orjson.loads(raw_by_channel[cluster.channel("alice")])
    assert alice[1:3] == ["acme", "alice"] and [e[0] for e in alice[3]] == [1, 2]
    # The format other nodes (of this version and the next) read: the fields once, no keys.
    bob = raw_by_channel[cluster.channel("bob")]
    assert orjson.loads(bob) == [1, "acme", "bob", [[1, CREATED, {"id": "n1", "title": "Hi"},
                                                     "2026-11-21T09:30:15.123456+00:00", 2, 1]]]
    assert len(bob) < 110


async def test_malformed_messages_are_logged_and_dropped(
        cluster: Nodes, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    node = await cluster.node()
    alice = Listener()
    await node.hub.subscribe("acme", "alice", alice)
    good = orjson.loads(orjson.dumps([1, "acme", "alice", [[9, CREATED, {}, AT, 0, 0]]]))
    bad: list[Any] = [
        b"not json", b"\xff\xfe", b"{}", b"[]", b"[1, \"acme\", \"alice\", 5]",
        orjson.dumps([2, *good[1:]]),  # a format this node does not speak
        orjson.dumps([1, "acme", "bob", good[3]]),  # another user's events on alice's channel
        orjson.dumps([1, "globex", "alice", good[3]]),
        orjson.dumps([1, "acme", "alice", [[9, CREATED, {}, "not a date", 0, 0]]]),
        orjson.dumps([1, "acme", "alice", [["9", CREATED, {}, AT, 0, 0]]]),
        orjson.dumps([1, "acme", "alice", [[9, CREATED, [], AT, 0, 0]]]),
        orjson.dumps([1, "acme", "alice", [[9, CREATED, {}, AT, 0]]]),
        orjson.dumps([1, "acme", "alice", [{"seq": 9}]]),
    ]
    with caplog.at_level(logging.WARNING, logger="tidings.hub"):
        for payload in bad:
            await redis.publish(cluster.channel(), payload)
        await redis.publish(f"{cluster.prefix}:kick", b"[1, \"x\", \"4401\", \"r\", null, null, null]")
        await redis.publish(f"{cluster.prefix}:kick", b"garbage")
        await redis.publish(cluster.channel(), orjson.dumps(good))
        got = await alice.next()
    assert (got.seq, got.at) == (9, AT)
    assert alice.waiting() == [] and node.kicks == []
    dropped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(dropped) == len(bad) + 2


async def test_the_reader_reconnects_and_subscribes_again(
        cluster: Nodes, redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    a, b = await cluster.node(), await cluster.node()
    alice, bob = Listener(), Listener()
    await a.hub.subscribe("acme", "alice", alice)
    left = await a.hub.subscribe("acme", "gone", Listener())
    (old,) = await subscriber_ids(redis, a.hub)
    await a.hub.unsubscribe(left)
    with caplog.at_level(logging.WARNING, logger="tidings.hub"):
        await redis.client_kill_filter(_id=old)

        async def back() -> bool:
            ids = await subscriber_ids(redis, a.hub)
            return bool(ids) and ids != [old] and await numsub(redis, cluster.channel()) == 1
        await until(back, "subscribed again")
    assert any("lost" in r.getMessage() for r in caplog.records)
    assert await numsub(redis, cluster.channel("gone")) == 0  # only channels still wanted

    async def kick_channel_back() -> bool:
        return await numsub(redis, f"{cluster.prefix}:kick") == 2
    await until(kick_channel_back, "kick channel subscribed again")
    await b.hub.publish([event(seq=1)])
    assert await alice.next() == event(seq=1)
    await a.hub.subscribe("acme", "bob", bob)  # a new user after the reconnect
    await b.hub.publish([event("bob", seq=1)])
    assert await bob.next() == event("bob", seq=1)
    kick = Kick(CLOSE_UNAUTHENTICATED, "user deleted", app_id="acme", user_id="alice")
    await b.hub.kick(kick)
    await b.hub.publish([event(seq=2)])
    assert await alice.next() == event(seq=2)
    assert a.kicks == [kick]


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
