"""Notifications (the inbox) and their deliveries (the outbox) on DynamoDB.

A notification is an inbox item in its home partition: its user's (`keys.user`), or the raw
address's (`keys.address`) when it was sent to a phone number or an e-mail address. The
inbox is a Query of that partition, newest first: sort keys are `N#<ULID>`, and ULIDs order
by time. A notification's own partition (`keys.notification`) holds a pointer to the home
(`keys.POINTER`) and its deliveries (`D#<delivery id>`): the items the table's stream
forwards to the delivery queue, and that the queue claims through the sparse `gsi1` partition
`keys.DUE_DELIVERIES` while they are due.

Scheduled notifications wait in the sparse `gsi2` partition `keys.DUE_SCHEDULED` until they
fire; like canceled ones they are in the home partition but not in the inbox (the filter
`_VISIBLE`, as the SQL store's)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ....domain.errors import StoreConflict, ValidationFailed
from ....domain.notifications import (
    Delivery,
    Notification,
    NotificationStatus,
    channel_mask,
    derive_status,
    feed_channels,
)
from ....ports import InboxQuery
from . import keys
from .codec import Item, at_us, decode, dumps, encode, loads, ms, packed, unpacked, us
from .counters import counters_of, read
from .pieces import MAX_ITEM_BYTES, size_of
from .table import key
from .unit import ReadOnly, Unit, gather_bounded

T = TypeVar("T")
A = TypeVar("A")

SCHEDULED = NotificationStatus.SCHEDULED.value
CANCELED = NotificationStatus.CANCELED.value
HIDDEN = frozenset({SCHEDULED, CANCELED})
# A scheduler holds the scheduled notifications it took this long; its transaction takes a
# fraction of it, and a scheduler that died lets them go after it.
LEASE_SECONDS = 30
# Read-all marks this many inbox items a transaction (of 100 actions; the counter item and
# the unit's stream and app events take the rest).
MARK_PIECE = 90
# Pages of one shard the scheduler reads looking for due notifications nobody leased.
DUE_PAGES = 8
# After this sort key no inbox key comes: ids are ULIDs (0-9, A-Z).
_INBOX_END = keys.inbox_sk("~")
_DELIVERIES = keys.delivery_sk("")

_VISIBLE = "NOT (#status IN (:scheduled, :canceled))"
_VISIBLE_VALUES = {":scheduled": {"S": SCHEDULED}, ":canceled": {"S": CANCELED}}
_UNLEASED = "(attribute_not_exists(lease_until) OR lease_until < :now)"

log = logging.getLogger("tidings.store")


# Items ----------------------------------------------------------------------------------------

def home(app_id: str, user_id: str | None, to_address: str | None) -> str:
    """The partition a notification's inbox item lives in."""
    if user_id is not None:
        return keys.user(app_id, user_id)
    return keys.address(app_id, to_address or "")


def notification_item(n: Notification) -> Item:
    """The inbox item (without deliveries). `feed` and `channel_mask` are the channels it is
    listed under (domain.feed_channels): the inbox's channel filter and the counters' mask."""
    feed = [str(c) for c in feed_channels(n)]
    values: dict[str, Any] = {
        "pk": home(n.app_id, n.user_id, n.to_address), "sk": keys.inbox_sk(n.id),
        "id": n.id, "app_id": n.app_id, "user_id": n.user_id, "to": dumps(n.to),
        "to_address": n.to_address, "channels": [str(c) for c in n.channels], "feed": feed,
        "channel_mask": channel_mask(feed), "title": n.title, "body": n.body,
        "data": dumps(n.data), "category": n.category, "created_at": us(n.created_at),
        "send_at": None if n.send_at is None else us(n.send_at), "status": str(n.status),
        "read_at": None if n.read_at is None else us(n.read_at), "sender_id": n.sender_id,
        # Not `ttl`: that is the table's expiry attribute (epoch seconds).
        "message_ttl": n.ttl, "priority": n.priority,
        "options": packed(n.options), "broadcast_id": n.broadcast_id}
    if n.status == SCHEDULED and n.send_at is not None:
        values["gsi2pk"] = keys.sharded(keys.DUE_SCHEDULED, n.id)
        values["gsi2sk"] = keys.due(us(n.send_at), n.app_id, n.id)
    item = encode(values)
    size = size_of(item)
    if size > MAX_ITEM_BYTES:
        # Checked before anything is written: DynamoDB would refuse the whole transaction.
        raise ValidationFailed.on(
            "html" if n.options and n.options.get("html") else "body",
            f"the notification takes {size // 1024} KB as stored (compressed), over the "
            f"{MAX_ITEM_BYTES // 1024} KB DynamoDB holds in one item; send less content")
    return item


def notification_of(item: Item, deliveries: Sequence[Delivery] = ()) -> Notification:
    v = decode(item)
    created = at_us(v["created_at"])
    assert created is not None
    return Notification(
        id=v["id"], app_id=v["app_id"], user_id=v.get("user_id"), to=loads(v.get("to")) or {},
        to_address=v.get("to_address"), channels=list(v.get("channels") or []),
        title=v.get("title"), body=v.get("body"), data=loads(v.get("data")) or {},
        category=v.get("category"), created_at=created, send_at=at_us(v.get("send_at")),
        status=v["status"], read_at=at_us(v.get("read_at")), sender_id=v.get("sender_id"),
        ttl=v.get("message_ttl"), priority=v.get("priority") or "normal",
        deliveries=list(deliveries), options=unpacked(v.get("options")),
        broadcast_id=v.get("broadcast_id"))


def pointer_item(n: Notification) -> Item:
    return encode({"pk": keys.notification(n.app_id, n.id), "sk": keys.POINTER,
                   "app_id": n.app_id, "notification_id": n.id, "user_id": n.user_id,
                   "home": home(n.app_id, n.user_id, n.to_address)})


def delivery_item(d: Delivery) -> Item:
    """A delivery in its notification's partition. While it is due (`due_at` set: pending, or
    sending under a lease) it is listed in the sparse gsi1 partition `keys.DUE_DELIVERIES`
    by due time. `due_ms` is for the table stream's reader (the outbox function): the due time
    in epoch milliseconds, or the last change's time once the delivery is final."""
    values: dict[str, Any] = {
        "pk": keys.notification(d.app_id, d.notification_id), "sk": keys.delivery_sk(d.id),
        "delivery_id": d.id, "notification_id": d.notification_id, "app_id": d.app_id,
        "user_id": d.user_id, "channel": d.channel, "provider": d.provider, "target": d.target,
        "status": str(d.status), "attempts": d.attempts, "error": d.error,
        "provider_message_id": d.provider_message_id, "created_at": us(d.created_at),
        "updated_at": us(d.updated_at), "due_at": None if d.due_at is None else us(d.due_at),
        "due_ms": ms(d.due_at if d.due_at is not None else d.updated_at)}
    if d.due_at is not None:
        values["gsi1pk"] = keys.sharded(keys.DUE_DELIVERIES, d.id)
        values["gsi1sk"] = keys.due(us(d.due_at), d.id)
    return encode(values)


def delivery_of(item: Item) -> Delivery:
    v = decode(item)
    created, updated = at_us(v["created_at"]), at_us(v["updated_at"])
    assert created is not None and updated is not None
    return Delivery(
        id=v["delivery_id"], notification_id=v["notification_id"], app_id=v["app_id"],
        user_id=v.get("user_id"), channel=v["channel"], provider=v["provider"],
        target=v.get("target"), status=v["status"], attempts=int(v.get("attempts", 0)),
        error=v.get("error"), provider_message_id=v.get("provider_message_id"),
        created_at=created, updated_at=updated, due_at=at_us(v.get("due_at")))


def is_counted(n: Notification) -> bool:
    """Whether the notification counts as unread for its user (the SQL store's rule)."""
    return n.user_id is not None and n.read_at is None and n.status not in HIDDEN


# Reads other repositories share -------------------------------------------------------------

async def home_of(unit: Unit, app_id: str, notification_id: str) -> str | None:
    """The partition of the notification's inbox item; None when there is no such
    notification."""
    pointer = await unit.get(keys.notification(app_id, notification_id), keys.POINTER)
    return None if pointer is None else str(pointer["home"]["S"])


async def deliveries_of(unit: Unit, app_id: str, notification_id: str) -> list[Delivery]:
    """The notification's deliveries as committed, by id."""
    return [delivery_of(i) async for i in unit.table.query_all(
        keys.notification(app_id, notification_id), sk_prefix=_DELIVERIES)]


async def followed_status(unit: Unit, app_id: str, notification_id: str,
                          changed: Mapping[str, str]) -> tuple[Item, str] | None:
    """The inbox item (as this unit sees it) and the status its deliveries make, where
    `changed` maps the ids of deliveries this unit writes (not committed, so not in the
    table) to their new status; None when the notification is gone. A notification without
    deliveries keeps its status (as in the SQL store)."""
    where = keys.notification(app_id, notification_id)
    pointer, items = await asyncio.gather(
        unit.get(where, keys.POINTER), _collect(unit.table.query_all(where, sk_prefix=_DELIVERIES)))
    if pointer is None:
        return None
    item = await unit.get(pointer["home"]["S"], keys.inbox_sk(notification_id))
    if item is None:
        return None
    status = deliveries_status(items, changed)
    return item, str(item["status"]["S"]) if status is None else status


def deliveries_status(items: Sequence[Item], changed: Mapping[str, str]) -> str | None:
    """The status the delivery items and this unit's `changed` ones (id -> status) make a
    notification; None when it has no deliveries."""
    statuses = {i["sk"]["S"][len(_DELIVERIES):]: i["status"]["S"] for i in items}
    statuses.update(changed)
    return derive_status(list(statuses.values())).value if statuses else None


def set_status(unit: Unit, item: Item, status: str) -> None:
    """Write the inbox item's status (the item as `followed_status` returned it)."""
    pk, sk = item["pk"]["S"], item["sk"]["S"]
    pending = unit.pending(pk, sk)
    if pending is not None and pending.kind == "Put":
        unit.put({**item, "status": {"S": status}})
    else:
        unit.update(pk, sk, "SET #status = :status", names={"#status": "status"},
                    values={":status": {"S": status}}, condition="attribute_exists(pk)",
                    conflict=f"notification {item['id']['S']} was deleted meanwhile")


def _mark(unit: Unit, item: Item, at: datetime) -> None:
    """Mark the inbox item read in `unit`, and move its user's counts."""
    unit.update(item["pk"]["S"], item["sk"]["S"], "SET read_at = :at",
                values={":at": {"N": str(us(at))}},
                condition="attribute_exists(pk) AND attribute_not_exists(read_at)",
                conflict="the notification was read or deleted meanwhile; try again")
    doc = decode(item)
    counters_of(unit).move(doc["app_id"], doc["user_id"], int(doc.get("channel_mask", 0)), -1)


async def _collect(items: AsyncIterator[T]) -> list[T]:
    return [i async for i in items]


# The repository ----------------------------------------------------------------------------

class DynamoNotifications:
    def __init__(self, unit: Unit) -> None:
        self._u = unit
        # The scheduled notifications this unit's `due` took: id -> lease id.
        self._leases: dict[str, str] = {}

    def _read(self) -> dict[tuple[str, str], datetime]:
        """Inbox items this unit marks read: its updates are not visible to its own reads, and
        a second mark in the same unit must neither write the item again nor count it twice."""
        found: dict[tuple[str, str], datetime] = self._u.shared.setdefault("inbox_read", {})
        return found

    def _of(self, item: Item) -> Notification:
        n = notification_of(item)
        read_at = self._read().get((item["pk"]["S"], item["sk"]["S"]))
        if read_at is not None and n.read_at is None:
            n.read_at = read_at
        return n

    def _listed(self, items: list[Item]) -> list[Notification]:
        """The notifications of a page; an item that does not decode (written by hand, or by
        a version that wrote it otherwise) is logged and left out, not a failed page."""
        out = []
        for item in items:
            try:
                out.append(self._of(item))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("inbox item %s/%s does not decode (%s: %s); left out of the page",
                          item.get("pk", {}).get("S"), item.get("sk", {}).get("S"),
                          type(exc).__name__, exc)
        return out

    async def _attach(self, items: list[Notification]) -> list[Notification]:
        found = await gather_bounded(lambda n: deliveries_of(self._u, n.app_id, n.id), items)
        for n, deliveries in zip(items, found, strict=True):
            n.deliveries = deliveries
        return items

    async def add_many(self, notifications: Sequence[Notification]) -> None:
        from .broadcasts import reserve, unreached  # broadcasts imports this module

        kept = await unreached(self._u, notifications)
        if len(kept) < len(notifications):
            # A broadcast batch done again (its worker died between two of the unit's
            # transactions) skips the users it reached; their stream events go too (stream.py).
            ids = {n.id for n in kept}
            self._u.shared.setdefault("skipped", set()).update(
                n.id for n in notifications if n.id not in ids)
        for n in kept:
            # One group, the recipient's (its counter and stream events are too): a unit too
            # large for one transaction writes each recipient whole in one (pieces.py).
            group = home(n.app_id, n.user_id, n.to_address)
            if n.broadcast_id is not None and n.user_id is not None:
                reserve(self._u, n.app_id, n.broadcast_id, n.user_id, n.id, group)
            self._u.put(notification_item(n))
            self._u.put(pointer_item(n), group=group)
            for d in n.deliveries:
                self._u.put(delivery_item(d), group=group)
            if is_counted(n):
                assert n.user_id is not None
                counters_of(self._u).move(n.app_id, n.user_id, channel_mask(feed_channels(n)), +1)

    async def get(self, app_id: str, notification_id: str) -> Notification | None:
        where = await home_of(self._u, app_id, notification_id)
        if where is None:
            return None
        item, deliveries = await asyncio.gather(
            self._u.get(where, keys.inbox_sk(notification_id)),
            deliveries_of(self._u, app_id, notification_id))
        if item is None:
            return None
        n = self._of(item)
        n.deliveries = deliveries
        return n

    async def inbox(self, app_id: str, user_id: str, query: InboxQuery, limit: int,
                    with_deliveries: bool = True) -> list[Notification]:
        conditions = [_VISIBLE]
        values: dict[str, Any] = dict(_VISIBLE_VALUES)
        if query.unread_only:
            conditions.append("attribute_not_exists(read_at)")
        if query.channel is not None:
            conditions.append("contains(feed, :channel)")
            values[":channel"] = {"S": query.channel}
        if query.before_id is not None:
            if query.after_id is not None and query.after_id >= query.before_id:
                return []  # an empty range (DynamoDB refuses one whose ends are inverted)
            conditions.append("#id <> :before")
            values[":before"] = {"S": query.before_id}
        items = await self._u.table.query_until(
            keys.user(app_id, user_id), limit, forward=False,
            sk_from=keys.inbox_sk(query.after_id or ""),
            sk_to=_INBOX_END if query.before_id is None else keys.inbox_sk(query.before_id),
            filter=" AND ".join(conditions), values=values,
            names={"#status": "status", **({"#id": "id"} if query.before_id else {})})
        found = self._listed(items)
        if query.unread_only:
            found = [n for n in found if n.read_at is None]
        return await self._attach(found) if with_deliveries else found

    async def unread_count(self, app_id: str, user_id: str, channel: str | None) -> int:
        return (await read(self._u, app_id, user_id)).count(channel)

    def _mark(self, item: Item, at: datetime) -> None:
        _mark(self._u, item, at)
        self._read()[(item["pk"]["S"], item["sk"]["S"])] = at

    async def mark_read(self, app_id: str, user_id: str, notification_id: str,
                        at: datetime) -> tuple[Notification, bool] | None:
        item = await self._u.get(keys.user(app_id, user_id), keys.inbox_sk(notification_id))
        if item is None:
            return None
        n = self._of(item)
        if n.status in HIDDEN:
            return None
        read_now = n.read_at is None
        if read_now:
            self._mark(item, at)
            n.read_at = at
        return (await self._attach([n]))[0], read_now

    async def mark_all_read(self, app_id: str, user_id: str, channel: str | None,
                            before_id: str | None, at: datetime) -> int:
        conditions = [_VISIBLE, "attribute_not_exists(read_at)"]
        values: dict[str, Any] = dict(_VISIBLE_VALUES)
        names = {"#status": "status"}
        if channel is not None:
            conditions.append("contains(feed, :channel)")
            values[":channel"] = {"S": channel}
        if before_id is not None:
            conditions.append("#id <> :before")
            values[":before"] = {"S": before_id}
            names["#id"] = "id"
        if not self._u.writable:
            raise ReadOnly("this is a read-only unit of work")
        done = self._read()
        count = 0
        todo = [item async for item in self._u.table.query_all(
                    keys.user(app_id, user_id), sk_from=keys.inbox_sk(""),
                    sk_to=_INBOX_END if before_id is None else keys.inbox_sk(before_id),
                    filter=" AND ".join(conditions), values=values, names=names)
                if (item["pk"]["S"], item["sk"]["S"]) not in done]
        # More than one transaction holds: all but the last piece commit now, each with its
        # own move of the counts, so that the counts agree with the inbox whatever happens
        # to the rest; the last piece commits with this unit (and its stream event).
        while len(todo) > MARK_PIECE:
            piece, todo = todo[:MARK_PIECE], todo[MARK_PIECE:]
            sub = Unit(self._u.table, writable=True)
            for item in piece:
                _mark(sub, item, at)
            await sub.commit()
            count += len(piece)
        for item in todo:
            self._mark(item, at)
        return count + len(todo)

    async def by_address(self, app_id: str, address: str, limit: int,
                         before_id: str | None) -> list[Notification]:
        options: dict[str, Any] = {}
        if before_id is not None:
            options = {"filter": "#id <> :before", "names": {"#id": "id"},
                       "values": {":before": {"S": before_id}}}
        items = await self._u.table.query_until(
            keys.address(app_id, address), limit, forward=False, sk_from=keys.inbox_sk(""),
            sk_to=_INBOX_END if before_id is None else keys.inbox_sk(before_id), **options)
        return await self._attach(self._listed(items))

    async def due(self, now: datetime, limit: int) -> list[Notification]:
        """Take up to `limit` scheduled notifications whose time has come.

        DynamoDB has no row lock held to the end of a transaction, so each is taken at once,
        outside the unit of work, with a conditional update that sets a short lease (`lease_id`,
        `lease_until`): a concurrent scheduler's claim fails on that condition and skips it.
        `fire` writes, in this unit, on the condition that the lease is still this one; should
        the unit fail, the lease runs out and another round takes them again."""
        if not self._u.writable:
            raise ReadOnly("this is a read-only unit of work")
        client = await self._u.table.client()
        lease = uuid.uuid4().hex
        now_us = us(now)
        values = {":now": {"N": str(now_us)}}

        async def claim(item: Item) -> Notification | None:
            try:
                answer = await client.update_item(
                    TableName=self._u.table.name, Key=key(item["pk"]["S"], item["sk"]["S"]),
                    UpdateExpression="SET lease_id = :lease, lease_until = :until",
                    ConditionExpression=f"#status = :scheduled AND {_UNLEASED}",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={
                        ":lease": {"S": lease}, ":now": {"N": str(now_us)},
                        ":until": {"N": str(now_us + LEASE_SECONDS * 1_000_000)},
                        ":scheduled": {"S": SCHEDULED}},
                    ReturnValues="ALL_NEW")
            except client.exceptions.ConditionalCheckFailedException:
                return None  # fired, canceled or taken meanwhile
            return notification_of(answer["Attributes"])

        async def unleased(shard: str) -> list[Item]:
            # The filter applies after the Limit: read on past leased ones (a few pages).
            items: list[Item] = []
            start: dict[str, Any] | None = None
            for _ in range(DUE_PAGES):
                page, start = await self._u.table.query(
                    shard, index="gsi2", sk_to=keys.due(now_us, "~"), limit=max(limit, 25),
                    start=start, filter=_UNLEASED, values=values)
                items += page
                if len(items) >= limit or start is None:
                    break
            return items

        # The oldest due of every shard, then the oldest of those first.
        pages = await gather_bounded(unleased, keys.shards(keys.DUE_SCHEDULED))
        found = sorted((i for page in pages for i in page), key=lambda i: i["gsi2sk"]["S"])
        taken: list[Notification] = []
        at = 0
        while at < len(found) and len(taken) < limit:
            batch = found[at:at + limit - len(taken)]
            at += len(batch)
            for n in await gather_bounded(claim, batch):
                if n is not None:
                    self._leases[n.id] = lease
                    taken.append(n)
        taken.sort(key=lambda n: (n.send_at or now, n.id))
        return taken

    async def fire(self, items: Sequence[Notification]) -> None:
        for n in items:
            feed = [str(c) for c in feed_channels(n)]
            condition = "#status = :scheduled"
            values: dict[str, Any] = {
                ":status": {"S": str(n.status)}, ":feed": {"L": [{"S": c} for c in feed]},
                ":mask": {"N": str(channel_mask(feed))}, ":scheduled": {"S": SCHEDULED}}
            lease = self._leases.pop(n.id, None)
            if lease is not None:
                condition += " AND lease_id = :lease"
                values[":lease"] = {"S": lease}
            self._u.update(
                home(n.app_id, n.user_id, n.to_address), keys.inbox_sk(n.id),
                "SET #status = :status, feed = :feed, channel_mask = :mask "
                "REMOVE gsi2pk, gsi2sk, lease_id, lease_until",
                names={"#status": "status"}, values=values, condition=condition,
                conflict=f"scheduled notification {n.id} was canceled, deleted or taken by "
                         "another scheduler meanwhile")
            group = home(n.app_id, n.user_id, n.to_address)
            for d in n.deliveries:
                self._u.put(delivery_item(d), group=group)
            if is_counted(n):
                assert n.user_id is not None
                counters_of(self._u).move(n.app_id, n.user_id, channel_mask(feed), +1)

    async def cancel(self, app_id: str, notification_id: str,
                     at: datetime) -> Notification | None:
        where = await home_of(self._u, app_id, notification_id)
        if where is None:
            return None
        item = await self._u.get(where, keys.inbox_sk(notification_id))
        if item is None:
            return None
        n = self._of(item)
        if n.status != SCHEDULED:
            return (await self._attach([n]))[0]
        return self.cancel_scheduled(item, at)

    def cancel_scheduled(self, item: Item, at: datetime) -> Notification:
        """Cancel the scheduled notification of this inbox item (as read by this unit)."""
        n = self._of(item)
        lease_until = decode(item).get("lease_until")
        if lease_until is not None and lease_until >= us(at):
            raise StoreConflict(f"notification {n.id} is being sent right now")
        self._u.update(
            item["pk"]["S"], item["sk"]["S"],
            "SET #status = :canceled REMOVE gsi2pk, gsi2sk, lease_id, lease_until",
            names={"#status": "status"},
            values={":canceled": {"S": CANCELED}, ":scheduled": {"S": SCHEDULED},
                    ":now": {"N": str(us(at))}},
            condition=f"#status = :scheduled AND {_UNLEASED}",
            conflict=f"notification {n.id} was sent or deleted meanwhile")
        n.status = CANCELED
        return n


__all__ = [
    "DynamoNotifications",
    "deliveries_of",
    "deliveries_status",
    "delivery_item",
    "delivery_of",
    "followed_status",
    "home",
    "home_of",
    "is_counted",
    "notification_item",
    "notification_of",
    "pointer_item",
    "set_status",
]
