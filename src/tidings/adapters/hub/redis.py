"""The hub of a cluster: API nodes share stream events through Redis pub/sub.

The users of an app are spread over `shards` channels, `{prefix}:s:{app_id}:{shard}` with
`shard = crc32(user_id) % shards`. A node subscribes to a shard channel while it holds at least
one connection of a user of that shard, on the one pub/sub connection of the process. A publisher
sends the events of a batch as one message per (app, shard) (of at most MESSAGE_EVENTS events),
all of them in one round trip: a send to 1,000 users is a handful of messages, and a receiving
node reads, decodes and dispatches each of them once, rather than once per user. They go in one
MULTI/EXEC, so that they reach every node back to back: Redis would otherwise interleave the
large messages of batches published at the same time by several nodes, and every batch would
finish late instead of one after the other. A node receives the events of every user of the
shards it listens to, and skips, with one lookup each, those of users it holds no connection of.
The publishing node receives its events back through Redis like every other node: one way in
for an event, never two copies.

Every node of a deployment must use the same number of shards: a node with another number
listens for some of its users on channels where their events are not published (it logs and
drops the events of its users that it finds on the wrong shard).

Redis is best effort here, like the hub itself. While it cannot be reached, publishing raises
`Unavailable` (the callers log it), the reader reconnects with back-off and subscribes again to
every shard channel that still has a local user, and the connections' sequence check reads from
the store whatever was published meanwhile.

The pub/sub connection is a plain redis-py connection driven here rather than redis-py's PubSub:
the hub has to know when Redis confirmed each SUBSCRIBE (a subscriber may only be told it is live
then) and has to own reconnecting, which PubSub does on its own, at its own time, on whichever
call meets the broken socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ...domain.errors import NotConfigured, Unavailable
from ...domain.stream import Kick, StreamEvent
from ...ports import HubSubscription
from .memory import Deliver, MemoryHub, Subscription, call_on_kick

log = logging.getLogger("tidings.hub")

PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# What travels on the channels, as compact JSON arrays (the receiving node knows the names):
#   a shard's events  [FORMAT, app_id, shard,
#                      [[user_id, seq, type, data, at, unread, unread_in_app], ...]]
#   a kick            [FORMAT, node, code, reason, app_id, user_id, key_id]
# A node drops a message of another format, so that nodes of two versions can share a Redis.
FORMAT = 2

SHARDS = 16  # shard channels per app, unless the hub is told otherwise
MAX_SHARDS = 1024
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE when subscribing again after a reconnect
# Events per message at most: a node dispatches a message in one go, without letting anything
# else run, so a send that the store committed together with many others comes as several.
MESSAGE_EVENTS = 1000


def shard_of(user_id: str, shards: int) -> int:
    """The shard of a user: the same on every node and in every version that speaks FORMAT."""
    return zlib.crc32(user_id.encode()) % shards


def encode_events(app_id: str, shard: int, events: Sequence[StreamEvent]) -> bytes:
    return orjson.dumps([FORMAT, app_id, shard,
                         [[e.user_id, e.seq, e.type, e.data, e.at, e.unread, e.unread_in_app]
                          for e in events]])


def decode_events(raw: bytes, app_id: str, shard: int, shards: int,
                  wanted: Callable[[str, str], bool]) -> list[StreamEvent]:
    """The events of a message on the channel of (app_id, shard) whose users are `wanted` (have
    a subscriber here); the others are skipped unread. Raises ValueError for anything else: a
    message of another app, shard or format, and a wanted event of the wrong shape or of a user
    of another shard."""
    doc = orjson.loads(raw)
    if not isinstance(doc, list) or len(doc) != 4 or doc[0] != FORMAT:
        raise ValueError("not a stream message of this version")
    if doc[1] != app_id or type(doc[2]) is not int or doc[2] != shard:
        raise ValueError("the message names another app or shard than its channel")
    items = doc[3]
    if not isinstance(items, list):
        raise ValueError("no list of events")
    events = []
    times: dict[str, datetime] = {}  # the events of one send share their time
    for item in items:
        if type(item) is not list or len(item) != 7:
            raise ValueError("an event is not a list of seven fields")
        user_id, seq, kind, data, at, unread, unread_in_app = item
        if type(user_id) is not str:
            raise ValueError("an event names no user")
        if not wanted(app_id, user_id):
            continue
        if not (type(seq) is int and isinstance(kind, str) and isinstance(data, dict)
                and isinstance(at, str) and type(unread) is int and type(unread_in_app) is int):
            raise ValueError("an event field has the wrong type")
        if shard_of(user_id, shards) != shard:
            raise ValueError(f"user {user_id!r} is not of shard {shard} of {shards} "
                             "(do all nodes use the same number of shards?)")
        when = times.get(at)
        if when is None:
            when = times[at] = datetime.fromisoformat(at)
        events.append(StreamEvent(app_id, user_id, seq, kind, data, when, unread, unread_in_app))
    return events


def encode_kick(node: str, kick: Kick) -> bytes:
    return orjson.dumps([FORMAT, node, kick.code, kick.reason, kick.app_id, kick.user_id,
                         kick.key_id])


def decode_kick(raw: bytes) -> tuple[str, Kick]:
    """The sending node and the kick; raises ValueError for anything else."""
    doc = orjson.loads(raw)
    if not isinstance(doc, list) or len(doc) != 7 or doc[0] != FORMAT:
        raise ValueError("not a kick of this version")
    _, node, code, reason, app_id, user_id, key_id = doc
    if not (isinstance(node, str) and type(code) is int and isinstance(reason, str)
            and all(v is None or isinstance(v, str) for v in (app_id, user_id, key_id))):
        raise ValueError("a kick field has the wrong type")
    return node, Kick(code, reason, app_id, user_id, key_id)


@dataclass(eq=False)
class _Channel:
    """A shard channel that has local users."""

    app_id: str
    shard: int
    ready: asyncio.Future[None]  # done once Redis confirmed the SUBSCRIBE on the current connection
    sent_on: AbstractConnection | None = field(default=None, repr=False)
    users: int = 0  # the users of the shard with a subscriber here
    was_live: bool = False  # subscribed on a connection that was lost: messages may be missed


class RedisHub:
    """`shards`: the shard channels of each app, 1 to 1024, the same on every node of a
    deployment. More shards send a node fewer events of users it does not hold, and a batch as
    more, smaller messages."""

    def __init__(self, url: str, prefix: str = "tidings", *, shards: int = SHARDS,
                 timeout: float = 2.0, ping_every: float = 30.0, max_backoff: float = 10.0) -> None:
        if not PREFIX.fullmatch(prefix):
            raise NotConfigured(f"the Redis channel prefix {prefix!r} must match {PREFIX.pattern}")
        if type(shards) is not int or not 1 <= shards <= MAX_SHARDS:
            raise NotConfigured(f"the number of Redis hub shards must be 1 to {MAX_SHARDS}, "
                                f"not {shards!r}")
        self._shards = shards
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._ping_every = ping_every
        self._max_backoff = max_backoff
        self._node = uuid.uuid4().hex[:12]
        # The client name of this process's connections (`CLIENT LIST` shows `<name>:sub`,
        # `<name>:pub`): an operator can tell the nodes apart.
        self.name = f"{prefix}:hub:{self._node}"
        self._kick_channel = f"{prefix}:kick".encode()
        self._local = MemoryHub()
        self._channels: dict[bytes, _Channel] = {}
        # The subscribe and unsubscribe confirmations Redis still owes on the current connection,
        # per channel in the order the commands were sent (None: nobody waits for it).
        self._expected: dict[bytes, deque[asyncio.Future[None] | None]] = {}
        self._write = asyncio.Lock()  # commands and their `_expected` entries in the same order
        self._conn: AbstractConnection | None = None
        self._pool: ConnectionPool | None = None
        self._redis: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._kick_ready: asyncio.Future[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._on_kick: Callable[[Kick], None] | None = None
        self._closed = False

    # -- the Hub port -------------------------------------------------------------------
    async def start(self, on_kick: Callable[[Kick], None]) -> None:
        """Connects, and returns once the kick channel is subscribed, or once the first attempt
        failed: the node then runs without its peers until Redis answers (logged)."""
        self._on_kick = on_kick
        common: dict[str, Any] = {"socket_timeout": self._timeout, "protocol": 2,
                                  "socket_connect_timeout": self._timeout}
        self._redis = Redis.from_url(self._url, client_name=f"{self.name}:pub",
                                     retry=Retry(NoBackoff(), 1), **common)
        self._pool = ConnectionPool.from_url(self._url, client_name=f"{self.name}:sub",
                                             retry=Retry(NoBackoff(), 0), **common)
        self._first_attempt = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_forever(), name=f"hub reader {self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(self._first_attempt), self._timeout * 2)
        except TimeoutError:
            log.warning("Redis did not confirm the subscriptions of this node in %.0f s; "
                        "trying on in the background", self._timeout * 2)

    async def publish(self, events: Sequence[StreamEvent]) -> None:
        if not events:
            return
        if self._redis is None or self._closed:
            raise Unavailable("the Redis hub is not running")
        shards = self._shards
        groups: dict[tuple[str, int], list[StreamEvent]] = {}
        for event in events:
            key = (event.app_id, shard_of(event.user_id, shards))
            group = groups.get(key)
            if group is None:
                groups[key] = [event]
            else:
                group.append(event)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for (app_id, shard), group in groups.items():
                    channel = self._channel(app_id, shard)
                    for i in range(0, len(group), MESSAGE_EVENTS):
                        try:
                            payload = encode_events(app_id, shard, group[i:i + MESSAGE_EVENTS])
                        except TypeError:
                            log.exception("stream events of %s, shard %d, cannot be encoded",
                                          app_id, shard)
                            continue
                        pipe.publish(channel, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"could not publish stream events to Redis: {exc}") from exc

    async def subscribe(self, app_id: str, user_id: str, deliver: Deliver) -> Subscription:
        if self._pool is None or self._closed:
            raise Unavailable("the Redis hub is not running")
        sub, first = self._local.add(app_id, user_id, deliver)
        shard = shard_of(user_id, self._shards)
        name = self._channel(app_id, shard)
        chan = self._channels.get(name)
        new = chan is None
        if chan is None:
            chan = self._channels[name] = _Channel(
                app_id, shard, asyncio.get_running_loop().create_future())
        if first:
            chan.users += 1
        try:
            if new:
                await self._send_subscribe(name, chan)
            # The other subscribers of the shard wait for the same confirmation as the first.
            await asyncio.wait_for(asyncio.shield(chan.ready), self._timeout)
            if self._closed:
                raise Unavailable("the Redis hub was closed")
        except TimeoutError:
            await self.unsubscribe(sub)
            raise Unavailable("Redis did not confirm the subscription in time") from None
        except BaseException:
            await self.unsubscribe(sub)
            raise
        return sub

    async def unsubscribe(self, subscription: HubSubscription) -> None:
        if not self._local.remove(subscription):
            return  # the user has other subscribers here (or this one was removed already)
        name = self._channel(subscription.app_id,
                             shard_of(subscription.user_id, self._shards))
        chan = self._channels.get(name)
        if chan is None:
            return
        chan.users -= 1
        if chan.users > 0:
            return  # other users of the shard are held here
        del self._channels[name]
        async with self._write:
            conn = self._conn
            if conn is None or chan.sent_on is not conn:
                return  # never subscribed on this connection: nothing to undo
            chan.sent_on = None
            self._expected.setdefault(name, deque()).append(None)
            try:
                await conn.send_command("UNSUBSCRIBE", name, check_health=False)
            except (RedisError, OSError) as exc:
                log.debug("UNSUBSCRIBE failed (%s); the reader reconnects without it", exc)

    async def kick(self, kick: Kick) -> None:
        """Acts here at once (this node's streams close even while Redis is away), then tells
        the other nodes; this node skips its own kick when Redis brings it back."""
        if self._on_kick is not None:
            call_on_kick(self._on_kick, kick)
        if self._redis is None or self._closed:
            raise Unavailable("the Redis hub is not running")
        try:
            await self._redis.publish(self._kick_channel, encode_kick(self._node, kick))
        except (RedisError, OSError) as exc:
            raise Unavailable(f"could not tell the other nodes to close streams: {exc}") from exc

    async def close(self) -> None:
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for future in [self._kick_ready, self._first_attempt,
                       *(c.ready for c in self._channels.values())]:
            if future is not None and not future.done():
                future.set_result(None)  # subscribers still waiting see `_closed`
        self._channels.clear()
        self._expected.clear()
        await self._local.close()
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.disconnect()

    # -- the reader ---------------------------------------------------------------------
    def _channel(self, app_id: str, shard: int) -> bytes:
        return f"{self._prefix}:s:{app_id}:{shard}".encode()  # app ids have no ':'

    async def _send_subscribe(self, name: bytes, chan: _Channel) -> None:
        async with self._write:
            conn = self._conn
            if conn is None or chan.sent_on is conn or self._channels.get(name) is not chan:
                return  # the reader subscribes it when it connects; or it is sent; or it left
            chan.sent_on = conn
            self._expected.setdefault(name, deque()).append(chan.ready)
            try:
                await conn.send_command("SUBSCRIBE", name, check_health=False)
            except (RedisError, OSError) as exc:
                log.debug("SUBSCRIBE failed (%s); the reader subscribes again when it reconnects", exc)

    async def _read_forever(self) -> None:
        assert self._pool is not None
        delay = 0.0
        while True:
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            worked = False
            try:
                await self._open(conn)
                await self._read(conn)
            except (RedisError, OSError) as exc:
                log.warning("Redis pub/sub connection lost or refused: %s", exc)
            except Exception:
                log.exception("the Redis hub's reader failed")
            finally:
                worked = await self._lost(conn)
            self._settle(self._first_attempt)
            if worked:
                delay = 0.0  # try again soon; back off only while attempts keep failing
            delay = min(self._max_backoff, delay * 2) if delay else 0.1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _open(self, conn: AbstractConnection) -> None:
        """Connects and subscribes to the kick channel and every channel with local subscribers."""
        await conn.connect()  # type: ignore[no-untyped-call]
        async with self._write:
            self._kick_ready = asyncio.get_running_loop().create_future()
            self._expected = {self._kick_channel: deque([self._kick_ready])}
            for name, chan in self._channels.items():
                chan.sent_on = conn
                self._expected[name] = deque([chan.ready])
            self._conn = conn
            names = [self._kick_channel, *self._channels]
            for i in range(0, len(names), SUBSCRIBE_BATCH):
                await conn.send_command("SUBSCRIBE", *names[i:i + SUBSCRIBE_BATCH],
                                        check_health=False)

    async def _read(self, conn: AbstractConnection) -> None:
        """Reads until the connection fails; a PING after a quiet `ping_every` seconds finds a
        connection that died without a word (a pong or any message is proof of life)."""
        pinged = False
        while True:
            response = await conn.read_response(timeout=self._ping_every)
            if response is None:
                if pinged:
                    raise TimeoutError("Redis did not answer a PING")
                async with self._write:
                    await conn.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            self._handle(response)

    async def _lost(self, conn: AbstractConnection) -> bool:
        """Forgets the connection; says whether it had worked (Redis confirmed the kick channel)."""
        worked = self._kick_ready is not None and self._kick_ready.done()
        self._kick_ready = None
        if self._conn is conn:
            self._conn = None
        self._expected = {}
        loop = asyncio.get_running_loop()
        for chan in self._channels.values():
            chan.sent_on = None
            if chan.ready.done():  # new subscribers wait until it is subscribed again
                chan.was_live = True
                chan.ready = loop.create_future()
        try:
            await conn.disconnect(nowait=True)
        except (RedisError, OSError) as exc:
            log.debug("closing the lost Redis connection: %s", exc)
        return worked

    def _handle(self, response: Any) -> None:
        if not isinstance(response, list) or len(response) < 2:
            log.warning("unexpected reply on the Redis pub/sub connection: %.100r", response)
            return
        kind, name = response[0], response[1]
        if kind == b"message" and len(response) == 3:
            if name == self._kick_channel:
                self._handle_kick(response[2])
                return
            chan = self._channels.get(name)
            if chan is None:
                return  # crossed our UNSUBSCRIBE
            try:
                events = decode_events(response[2], chan.app_id, chan.shard, self._shards,
                                       self._local.has_subscribers)
            except (ValueError, TypeError) as exc:
                log.warning("dropped a malformed message on %r: %s", name, exc)
                return
            if events:
                self._local.fan_out(events)
        elif kind in (b"subscribe", b"unsubscribe"):
            waiting = self._expected.get(name)
            if waiting:
                future = waiting.popleft()
                if not waiting:
                    del self._expected[name]
                self._settle(future)
                if name == self._kick_channel and kind == b"subscribe":
                    self._settle(self._first_attempt)
                chan = self._channels.get(name)
                if kind == b"subscribe" and chan is not None and chan.was_live:
                    # Back after a lost connection: what was published meanwhile is in the
                    # store only; the channel's streams read it now, not at their next event.
                    chan.was_live = False
                    self._resync(chan)

    def _resync(self, chan: _Channel) -> None:
        app_id, shard, shards = chan.app_id, chan.shard, self._shards
        told = self._local.resync(
            lambda app, user: app == app_id and shard_of(user, shards) == shard,
            datetime.now(UTC))
        log.info("resubscribed %s shard %d after a lost connection: %d streams catch up from "
                 "the store", app_id, shard, told)

    def _handle_kick(self, raw: bytes) -> None:
        try:
            node, kick = decode_kick(raw)
        except (ValueError, TypeError) as exc:
            log.warning("dropped a malformed kick: %s", exc)
            return
        if node != self._node and self._on_kick is not None:
            call_on_kick(self._on_kick, kick)

    @staticmethod
    def _settle(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)
