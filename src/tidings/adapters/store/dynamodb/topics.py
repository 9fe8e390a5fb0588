"""Topics and their subscriptions on DynamoDB.

- a topic: pk=`keys.topics(app)`, sk=key (name, times, and `changes`, a number every
  subscribe moves);
- a subscription, twice: pk=`keys.topic(app, key)`, sk=`keys.part(user)` (a broadcast walks
  it in user order; `count` is a Select=COUNT Query of it) with gsi1 (`keys.topic_newest`,
  `keys.subscribed(ms, user)`) for the newest-first listing; and pk=`keys.user(app, user)`,
  sk=`keys.subscription_sk(key)` for the user's topics by key.

DynamoDB has no row lock for a second writer to wait on, so what SQL decides by waiting is
decided here by conditional writes that happen at once, not at the unit's commit: creating a
topic (of concurrent first puts one creates, the others rename), subscribing (of concurrent
subscribes of one user one is new; the same transaction checks that the topic exists and is
not being deleted, and moves its `changes`), and the mark `deleting` (a lease of
DELETE_LEASE seconds) that a delete puts on the topic before it reads its subscriptions. A
unit rolled back afterwards leaves those in place: the subscription or topic as a retry would
have made it; the mark until its lease ends, subscribes answering NotFound meanwhile.

So a subscription cannot outlive its topic: a subscribe either committed before the mark (the
delete's read finds it) or fails on the mark (NotFound). A delete that outlives its lease
holds still on `changes` as its last guard: a subscribe since then fails the delete with
StoreConflict rather than leave a subscription behind. Within one process a gate (`_Gate`)
makes the order in which a subscribe and a delete were called the order in which they reach
the table."""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from ....domain.errors import NotFound, StoreConflict
from ....domain.topics import Subscription, Topic
from . import keys
from .codec import Item, at_us, decode, encode, ms, us
from .table import Table
from .table import key as item_key
from .unit import ReadOnly, Unit
from .users import count_items

CHANGES = "changes"
DELETING = "deleting"
# How long a delete's mark holds off subscribes (the delete's unit commits well within it).
DELETE_LEASE = 30
_END = keys.subscription_sk("~")  # topic keys are [A-Za-z0-9_.:-]: all before "~"
_ATTEMPTS = 8


def topic_item(t: Topic) -> Item:
    return encode({"pk": keys.topics(t.app_id), "sk": t.key, "app_id": t.app_id, "key": t.key,
                   "name": t.name, "created_at": us(t.created_at), "updated_at": us(t.updated_at)})


def topic_of(item: Item) -> Topic:
    v = decode(item)
    created, updated = at_us(v["created_at"]), at_us(v["updated_at"])
    assert created is not None and updated is not None
    return Topic(app_id=v["app_id"], key=v["key"], name=v.get("name"), created_at=created,
                 updated_at=updated)


def subscription_items(app_id: str, key: str, user_id: str, at: datetime) -> tuple[Item, Item]:
    """The topic's copy (in gsi1 by time) and the user's."""
    values = {"app_id": app_id, "topic": key, "user_id": user_id, "created_at": us(at)}
    return (encode({"pk": keys.topic(app_id, key), "sk": keys.part(user_id),
                    "gsi1pk": keys.topic_newest(app_id, key),
                    "gsi1sk": keys.subscribed(ms(at), user_id), **values}),
            encode({"pk": keys.user(app_id, user_id), "sk": keys.subscription_sk(key), **values}))


def subscription_of(item: Item) -> Subscription:
    v = decode(item)
    created = at_us(v["created_at"])
    assert created is not None
    return Subscription(app_id=v["app_id"], topic=v["topic"], user_id=v["user_id"],
                        created_at=created)


@dataclass
class _State:
    """What this unit did to topics, for its own later reads and its commit."""

    deleted: set[tuple[str, str]] = field(default_factory=set)
    renamed: dict[tuple[str, str], tuple[str | None, datetime]] = field(default_factory=dict)


def _state(unit: Unit) -> _State:
    found = unit.shared.get("topics")
    if not isinstance(found, _State):
        found = unit.shared["topics"] = _State()
    return found


class DynamoTopics:
    def __init__(self, unit: Unit) -> None:
        self._u = unit
        self._s = _state(unit)

    async def _item(self, app_id: str, key: str) -> Item | None:
        if (app_id, key) in self._s.deleted:
            return None
        return await self._u.get(keys.topics(app_id), key)

    def _topic(self, item: Item) -> Topic:
        t = topic_of(item)
        renamed = self._s.renamed.get((t.app_id, t.key))
        if renamed is not None:
            t.name, t.updated_at = renamed
        return t

    def _writable(self) -> None:
        if not self._u.writable:
            raise ReadOnly("this is a read-only unit of work")

    async def put(self, topic: Topic) -> bool:
        if await self._item(topic.app_id, topic.key) is None:
            self._writable()
            client = await self._u.table.client()
            try:
                await client.put_item(TableName=self._u.table.name, Item=topic_item(topic),
                                      ConditionExpression="attribute_not_exists(pk)")
                return True
            except client.exceptions.ConditionalCheckFailedException:
                pass  # created meanwhile: renamed below, as SQL's ON CONFLICT does
        name = {":name": {"S": topic.name}} if topic.name is not None else {}
        self._u.update(
            keys.topics(topic.app_id), topic.key,
            ("SET #name = :name, updated_at = :at" if name else
             "SET updated_at = :at REMOVE #name"),
            names={"#name": "name"}, values={":at": {"N": str(us(topic.updated_at))}, **name},
            condition="attribute_exists(pk)", conflict=f"topic {topic.key} was deleted meanwhile")
        self._s.renamed[topic.app_id, topic.key] = (topic.name, topic.updated_at)
        return False

    async def get(self, app_id: str, key: str) -> Topic | None:
        item = await self._item(app_id, key)
        return None if item is None else self._topic(item)

    async def delete(self, app_id: str, key: str) -> bool:
        if (app_id, key) in self._s.deleted:
            return False
        self._writable()
        pk = keys.topics(app_id)
        marked = await self._mark(app_id, key)
        if marked is None:
            return False
        self._s.deleted.add((app_id, key))
        async for item in self._u.table.query_all(keys.topic(app_id, key)):
            self._drop(item["pk"]["S"], item["sk"]["S"])
            self._drop(keys.user(app_id, item["user_id"]["S"]), keys.subscription_sk(key))
        changes = marked.get(CHANGES)
        self._u.delete(
            pk, key, names={"#changes": CHANGES},
            condition="attribute_not_exists(#changes)" if changes is None else "#changes = :n",
            values=None if changes is None else {":n": changes},
            conflict=f"topic {key} was subscribed to while it was deleted; try again")
        return True

    def _drop(self, pk: str, sk: str) -> None:
        earlier = self._u.pending(pk, sk)
        if earlier is None or earlier.kind == "Put":
            self._u.delete(pk, sk)

    async def subscribe(self, app_id: str, key: str, user_id: str, at: datetime) -> bool:
        if (app_id, key) in self._s.deleted:
            raise NotFound(f"topic {key} not found")
        if not self._u.writable:
            if await self._item(app_id, key) is None:
                raise NotFound(f"topic {key} not found")
            self._writable()
        mine, theirs = subscription_items(app_id, key, user_id, at)
        earlier = self._u.pending(mine["pk"]["S"], mine["sk"]["S"])
        if earlier is not None and earlier.kind == "Delete":  # unsubscribed by this unit
            if await self._item(app_id, key) is None:
                raise NotFound(f"topic {key} not found")
            self._u.put(mine)
            self._u.put(theirs)
            return True
        async with _gates(self._u).shared((app_id, key)):
            return await self._subscribe_at_once(app_id, key, mine, theirs)

    async def _mark(self, app_id: str, key: str) -> Item | None:
        """Mark the topic as being deleted, before anything else (see the module's
        docstring); the topic as marked, or None when there is none."""
        client = await self._u.table.client()
        async with _gates(self._u).alone((app_id, key)):
            try:
                marked = await client.update_item(
                    TableName=self._u.table.name, Key=item_key(keys.topics(app_id), key),
                    UpdateExpression="SET #deleting = :until",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={"#deleting": DELETING},
                    ExpressionAttributeValues={
                        ":until": {"N": str(_now_us() + DELETE_LEASE * 1_000_000)}},
                    ReturnValues="ALL_NEW")
            except client.exceptions.ConditionalCheckFailedException:
                return None
        item: Item = marked["Attributes"]
        return item

    async def _subscribe_at_once(self, app_id: str, key: str, mine: Item, theirs: Item) -> bool:
        client = await self._u.table.client()
        name = self._u.table.name
        items = [
            {"Update": {"TableName": name, "Key": item_key(keys.topics(app_id), key),
                        "UpdateExpression": "ADD #changes :one",
                        "ConditionExpression": "attribute_exists(pk) AND "
                                               "(attribute_not_exists(#deleting) OR #deleting < :now)",
                        "ExpressionAttributeNames": {"#changes": CHANGES, "#deleting": DELETING},
                        "ExpressionAttributeValues": {":one": {"N": "1"},
                                                      ":now": {"N": str(_now_us())}}}},
            {"Put": {"TableName": name, "Item": mine,
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": name, "Item": theirs}}]
        for attempt in range(_ATTEMPTS):
            try:
                await client.transact_write_items(TransactItems=items)
                return True
            except client.exceptions.TransactionCanceledException as exc:
                reasons = [r.get("Code") or "None"
                           for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise NotFound(f"topic {key} not found") from exc
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    return False
                if any(r not in ("None", "TransactionConflict", "ThrottlingError",
                                 "ProvisionedThroughputExceeded") for r in reasons):
                    raise
            except client.exceptions.TransactionConflictException:
                pass
            await asyncio.sleep(random.uniform(0, 0.01 * 2 ** attempt))
        raise StoreConflict(f"topic {key} is too busy; try again")

    async def unsubscribe(self, app_id: str, key: str, user_id: str) -> bool:
        pk, sk = keys.topic(app_id, key), keys.part(user_id)
        if await self._u.get(pk, sk) is None:
            return False
        self._u.delete(pk, sk)
        self._u.delete(keys.user(app_id, user_id), keys.subscription_sk(key))
        return True

    async def subscribers(self, app_id: str, key: str, limit: int,
                          before: tuple[int, str] | None) -> list[Subscription]:
        """Newest first, through gsi1: eventually consistent on AWS (a subscription made a
        moment ago may be missing from the listing for a moment)."""
        bound = None if before is None else keys.subscribed(*before)
        items = await self._u.table.query_until(
            keys.topic_newest(app_id, key), limit + 1, index="gsi1", forward=False, sk_to=bound)
        return [subscription_of(i) for i in items if i["gsi1sk"]["S"] != bound][:limit]

    async def subscriber_ids(self, app_id: str, key: str, after: str | None,
                             limit: int) -> list[str]:
        items = await self._u.table.query_until(
            keys.topic(app_id, key), limit,
            sk_from=None if after is None else keys.part(after) + "\x00")
        return [i["user_id"]["S"] for i in items]

    async def count(self, app_id: str, key: str) -> int:
        return await count_items(self._u, keys.topic(app_id, key))

    async def of_user(self, app_id: str, user_id: str, limit: int,
                      after: str | None) -> list[Subscription]:
        items = await self._u.table.query_until(
            keys.user(app_id, user_id), limit, sk_to=_END,
            sk_from=keys.subscription_sk("" if after is None else after + "\x00"))
        return [subscription_of(i) for i in items]

    # Last: inside the class, `list` after this names the method, not the builtin.
    async def list(self, app_id: str, limit: int, after: str | None) -> list[Topic]:
        gone = sum(1 for a, _ in self._s.deleted if a == app_id)
        items = await self._u.table.query_until(
            keys.topics(app_id), limit + gone, sk_from=None if after is None else after + "\x00")
        return [self._topic(i) for i in items
                if (app_id, i["sk"]["S"]) not in self._s.deleted][:limit]


def _now_us() -> int:
    """Leases are about real time (other processes), not the service's clock."""
    return time.time_ns() // 1000


class _Gate:
    """Within one process, the order in which a topic's subscribes and deletes were called is
    the order in which they reach the table, as SQL's lock orders them: subscribes go through
    together, a delete's mark alone, after the subscribes already under way and before those
    called after it. (Between processes the table's conditions order them.) Entering takes no
    turn of the event loop when nothing is in the way: what is called first enters first."""

    def __init__(self) -> None:
        self.sharing = 0
        self.closed = False
        self.users = 0
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self.changed:
            await self.changed.wait_for(lambda: not self.closed)
            self.sharing += 1
        try:
            yield
        finally:
            async with self.changed:
                self.sharing -= 1
                self.changed.notify_all()

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        async with self.changed:
            await self.changed.wait_for(lambda: not self.closed)
            self.closed = True
            await self.changed.wait_for(lambda: self.sharing == 0)
        try:
            yield
        finally:
            async with self.changed:
                self.closed = False
                self.changed.notify_all()


class _Gates:
    """The gates of one table's topics, each kept while somebody is in it or waiting."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Gate] = {}

    @asynccontextmanager
    async def shared(self, name: tuple[str, str]) -> AsyncIterator[None]:
        gate = self._take(name)
        try:
            async with gate.shared():
                yield
        finally:
            self._leave(name, gate)

    @asynccontextmanager
    async def alone(self, name: tuple[str, str]) -> AsyncIterator[None]:
        gate = self._take(name)
        try:
            async with gate.alone():
                yield
        finally:
            self._leave(name, gate)

    def _take(self, name: tuple[str, str]) -> _Gate:
        gate = self._open.setdefault(name, _Gate())
        gate.users += 1
        return gate

    def _leave(self, name: tuple[str, str], gate: _Gate) -> None:
        gate.users -= 1
        if gate.users == 0:
            del self._open[name]


_GATES: weakref.WeakKeyDictionary[Table, _Gates] = weakref.WeakKeyDictionary()


def _gates(unit: Unit) -> _Gates:
    found = _GATES.get(unit.table)
    if found is None:
        found = _GATES[unit.table] = _Gates()
    return found
