"""Users' profiles on DynamoDB.

An app's profiles share one partition (`keys.users`, sk = the escaped user id): listing them is
a strongly consistent Query in id order, and a segment is `domain.segments.matches` applied to
each page of profiles, read on until a page of users matched (DynamoDB has no query that
could select them). Everything else a user owns is in the user's own partition
(`keys.user`) or beside it, and goes when the user is deleted."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ....domain.errors import StoreConflict
from ....domain.segments import Segment, matches
from ....domain.users import User
from . import keys
from .codec import Item, at_us, decode, dumps, encode, loads, us
from .counters import counters_of
from .devices import device_keys, device_of
from .unit import ReadOnly, Unit, gather_bounded

# Queries in flight at once while a user's inbox is deleted.
# The most profiles read at once while a segment is evaluated.
MAX_SEGMENT_PAGE = 1000
CREATED = "user was created concurrently"
_SUBSCRIPTION = keys.subscription_sk("")
_DEVICE = keys.device_sk("")
_INBOX = keys.inbox_sk("")


def user_item(user: User) -> Item:
    return encode({
        "pk": keys.users(user.app_id), "sk": keys.part(user.id),
        "app_id": user.app_id, "id": user.id, "email": user.email, "phone": user.phone,
        "timezone": user.timezone, "locale": user.locale, "attributes": dumps(user.attributes),
        "created_at": us(user.created_at) if user.created_at else 0,
        "updated_at": us(user.updated_at) if user.updated_at else 0,
        "email_undeliverable_at": None if user.email_undeliverable_at is None
        else us(user.email_undeliverable_at),
        "email_undeliverable_reason": user.email_undeliverable_reason,
        "quiet_hours": None if user.quiet_hours is None else dumps(user.quiet_hours)})


def user_of(item: Item) -> User:
    v = decode(item)
    return User(
        app_id=v["app_id"], id=v["id"], email=v.get("email"), phone=v.get("phone"),
        timezone=v.get("timezone"), locale=v.get("locale"),
        attributes=loads(v.get("attributes")) or {}, created_at=at_us(v.get("created_at", 0)),
        updated_at=at_us(v.get("updated_at", 0)),
        email_undeliverable_at=at_us(v.get("email_undeliverable_at")),
        email_undeliverable_reason=v.get("email_undeliverable_reason"),
        quiet_hours=loads(v.get("quiet_hours")))


class DynamoUsers:
    def __init__(self, unit: Unit) -> None:
        self._u = unit

    async def get(self, app_id: str, user_id: str) -> User | None:
        item = await self._u.get(keys.users(app_id), keys.part(user_id))
        return None if item is None else user_of(item)

    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        pk = keys.users(app_id)
        items = await self._u.table.get_many([(pk, keys.part(u)) for u in user_ids])
        return {u.id: u for u in map(user_of, items)}

    def _create(self, item: Item) -> None:
        """Put a new profile: only where none is, unless this unit deletes the one there."""
        earlier = self._u.pending(item["pk"]["S"], item["sk"]["S"])
        if earlier is not None and earlier.kind == "Delete":
            self._u.put(item)
        else:
            self._u.put(item, condition="attribute_not_exists(pk)", conflict=CREATED)

    async def upsert(self, user: User) -> bool:
        item = user_item(user)
        existing = await self._u.get(item["pk"]["S"], item["sk"]["S"])
        if existing is None:
            self._create(item)
            return True
        item["created_at"] = existing.get("created_at", {"N": "0"})
        self._u.put_again(item, condition="attribute_exists(pk)",
                          conflict=f"user {user.id} was deleted meanwhile")
        return False

    async def ensure(self, app_id: str, user_id: str, at: datetime) -> None:
        """Written at once, not at commit: an empty profile is the same whoever makes it, so
        of several requests making it at once none should fail the rest of its unit (which may
        hold writes that are themselves made at once: topics.py). A unit that fails later
        leaves the empty profile, which is what any later request would make."""
        pk, sk = keys.users(app_id), keys.part(user_id)
        if await self._u.get(pk, sk) is not None:
            return
        if self._u.pending(pk, sk) is not None:  # deleted by this unit: made again with it
            self._create(user_item(User(app_id, user_id, created_at=at, updated_at=at)))
            return
        if not self._u.writable:
            raise ReadOnly("this is a read-only unit of work")
        client = await self._u.table.client()
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            await client.put_item(
                TableName=self._u.table.name,
                Item=user_item(User(app_id, user_id, created_at=at, updated_at=at)),
                ConditionExpression="attribute_not_exists(pk)")

    async def delete(self, app_id: str, user_id: str) -> bool:
        """The profile, and what the user owns: devices (with their token locks and pointers),
        inbox (with each notification's pointer and deliveries), preferences, subscriptions
        (both copies), stream events and WebSocket connections. The counters go to zero and
        keep the stream's number, as in the SQL store."""
        profile_pk, profile_sk = keys.users(app_id), keys.part(user_id)
        found = await self._u.get(profile_pk, profile_sk) is not None
        self._drop(profile_pk, profile_sk)
        home = keys.user(app_id, user_id)
        locks: list[tuple[str, str, str]] = []
        inbox: list[str] = []
        counted = False
        async for item in self._u.table.query_all(home):
            sk = item["sk"]["S"]
            if sk == keys.COUNT:  # zeroed below: the stream's number stays
                counted = True
                continue
            self._drop(home, sk)
            if sk.startswith(_DEVICE):
                found = True
                device = device_of(item)
                locks += [(pk, other, device.id) for pk, other in device_keys(device)[1:]]
            elif sk.startswith(_INBOX):
                found = True
                inbox.append(keys.notification(app_id, sk.removeprefix(_INBOX)))
            elif sk.startswith(_SUBSCRIPTION):
                self._drop(keys.topic(app_id, sk.removeprefix(_SUBSCRIPTION)), keys.part(user_id))
        await self._drop_device_items(locks)
        for parts in await self._read_all(inbox):  # each notification's pointer and deliveries
            for part in parts:
                self._drop(part["pk"]["S"], part["sk"]["S"])
        async for item in self._u.table.query_all(keys.stream(app_id, user_id)):
            self._drop(item["pk"]["S"], item["sk"]["S"])
        async for item in self._u.table.query_all(keys.connections(app_id, user_id)):
            self._drop(item["pk"]["S"], item["sk"]["S"])
            connection = item.get("connection_id", {}).get("S") or item["sk"]["S"][2:]
            self._drop(keys.connection_pointer(connection), keys.CONNECTION_POINTER)
        if counted:
            counters_of(self._u).zero(app_id, user_id)
        return found

    async def _read_all(self, partitions: list[str]) -> list[list[Item]]:
        async def one(pk: str) -> list[Item]:
            return [i async for i in self._u.table.query_all(pk)]

        return await gather_bounded(one, partitions)

    async def _drop_device_items(self, items: list[tuple[str, str, str]]) -> None:
        """A device's pointer goes, and its token's lock unless another device holds it now."""
        if not items:
            return
        held = {(i["pk"]["S"], i["sk"]["S"]): i.get("device_id", {}).get("S")
                for i in await self._u.table.get_many([(pk, sk) for pk, sk, _ in items])}
        for pk, sk, device_id in items:
            if (pk, sk) in held and held[pk, sk] in (None, device_id):
                self._drop(pk, sk)

    def _drop(self, pk: str, sk: str) -> None:
        earlier = self._u.pending(pk, sk)
        if earlier is None or (earlier.kind == "Put" and not earlier.optimistic):
            self._u.delete(pk, sk)

    async def mark_email_undeliverable(self, app_id: str, user_id: str, address: str,
                                       reason: str, at: datetime) -> bool:
        pk, sk = keys.users(app_id), keys.part(user_id)
        item = await self._u.get(pk, sk)
        if item is None or item.get("email", {}).get("S") != address:
            return False
        marks: dict[str, Any] = {"email_undeliverable_at": {"N": str(us(at))},
                                 "email_undeliverable_reason": {"S": reason[:300]}}
        earlier = self._u.pending(pk, sk)
        if earlier is not None and earlier.kind == "Put":
            self._u.put({**item, **marks})
        elif earlier is None:
            self._u.update(pk, sk, "SET email_undeliverable_at = :at, "
                           "email_undeliverable_reason = :reason",
                           values={":at": marks["email_undeliverable_at"],
                                   ":reason": marks["email_undeliverable_reason"],
                                   ":email": {"S": address}},
                           condition="email = :email",
                           conflict=f"the e-mail of user {user_id} changed meanwhile")
        else:
            raise StoreConflict(f"user {user_id} is changed twice in one unit of work")
        return True

    async def list(self, app_id: str, segment: Segment | None, limit: int,
                   after: str | None) -> list[User]:
        found: list[User] = []
        start: dict[str, Any] | None = None
        page = limit
        while len(found) < limit:
            items, start = await self._u.table.query(
                keys.users(app_id), limit=page, start=start,
                sk_from=None if after is None else keys.part(after) + "\x00")
            for user in map(user_of, items):
                if segment is None or matches(segment, user):
                    found.append(user)
                    if len(found) == limit:
                        break
            if start is None:
                break
            if segment is not None:
                # What follows a page cut short at `limit` is read again by the next call:
                # pages start at `limit` and grow while the segment is sparse.
                page = min(page * 2, MAX_SEGMENT_PAGE)
        return found

    async def count(self, app_id: str, segment: Segment | None) -> int:
        if segment is None:
            return await count_items(self._u, keys.users(app_id))
        n = 0
        async for item in self._u.table.query_all(keys.users(app_id), page=1000):
            n += matches(segment, user_of(item))
        return n


async def count_items(unit: Unit, pk: str) -> int:
    """The items of a partition, counted by DynamoDB (Select=COUNT), page after page."""
    client = await unit.table.client()
    request: dict[str, Any] = {
        "TableName": unit.table.name, "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}}, "Select": "COUNT",
        "ConsistentRead": True}
    total = 0
    while True:
        answer = await client.query(**request)
        total += int(answer.get("Count", 0))
        start = answer.get("LastEvaluatedKey")
        if not start:
            return total
        request["ExclusiveStartKey"] = start
