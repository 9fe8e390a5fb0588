"""Broadcasts on DynamoDB.

- the broadcast, pk=`keys.broadcasts(app)`, sk=id: every field; in gsi1's due partition
  (`keys.DUE_BROADCASTS`, sk = `keys.due(due_at, id)`) while a worker should take it on or
  holds it under a lease; gsi2pk=`keys.broadcast(id)` finds it by id alone (the sweep).
- a recipient, pk=`keys.recipients(app, id)`, sk=`keys.part(user id)`: the notification the
  user got from it. Put with `attribute_not_exists` beside that notification (`reserve`), so
  that no expansion, however often a batch is done again, gives a user two (what the SQL
  store's unique index on (broadcast_id, user_id) does); `progress` and `sweep` read the
  broadcast's notifications through these items.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ....domain.broadcasts import Broadcast, BroadcastStatus, Progress
from ....domain.notifications import DeliveryStatus, Notification, NotificationStatus
from . import keys
from .codec import at_us, decode, dumps, encode, loads, ms, us
from .counters import counters_of
from .notifications import (
    DynamoNotifications,
    deliveries_of,
    is_counted,
    notification_of,
)
from .queue import lease_due, statuses_of, update_expression
from .unit import Unit, gather_bounded

BROADCAST_SK = "BC"  # gsi2sk of every broadcast
# Inbox items read at once by `progress` (BatchGetItem takes 100).
PROGRESS_READS = 100


def broadcast_item(b: Broadcast) -> dict[str, Any]:
    due = None if b.due_at is None else us(b.due_at)
    return encode({
        "pk": keys.broadcasts(b.app_id), "sk": b.id, "broadcast_id": b.id, "app_id": b.app_id,
        "audience": dumps(b.audience), "message": dumps(b.message),
        "send_at": None if b.send_at is None else us(b.send_at), "local_time": b.local_time,
        "status": str(b.status), "cursor": b.cursor, "recipients": b.recipients,
        "expanded": b.expanded, "error": b.error, "created_at": us(b.created_at),
        "updated_at": us(b.updated_at), "due_at": due,
        "gsi1pk": None if due is None else keys.DUE_BROADCASTS,
        "gsi1sk": None if due is None else keys.due(due, b.id),
        "gsi2pk": keys.broadcast(b.id), "gsi2sk": BROADCAST_SK})


def broadcast_of(doc: dict[str, Any]) -> Broadcast:
    created, updated = at_us(doc["created_at"]), at_us(doc["updated_at"])
    assert created is not None and updated is not None
    return Broadcast(
        id=doc["broadcast_id"], app_id=doc["app_id"], audience=loads(doc["audience"]),
        message=loads(doc["message"]), send_at=at_us(doc.get("send_at")),
        local_time=doc.get("local_time"), status=doc["status"], cursor=doc.get("cursor"),
        recipients=doc.get("recipients"), expanded=int(doc.get("expanded", 0)),
        error=doc.get("error"), created_at=created, updated_at=updated,
        due_at=at_us(doc.get("due_at")))


class DynamoBroadcasts:
    def __init__(self, unit: Unit) -> None:
        self._unit = unit

    async def add(self, broadcast: Broadcast) -> None:
        self._unit.put(broadcast_item(broadcast), condition="attribute_not_exists(pk)",
                       conflict=f"broadcast {broadcast.id} exists")

    async def get(self, app_id: str, broadcast_id: str) -> Broadcast | None:
        item = await self._unit.get(keys.broadcasts(app_id), broadcast_id)
        return None if item is None else broadcast_of(decode(item))

    async def list(self, app_id: str, limit: int, before_id: str | None) -> list[Broadcast]:
        if limit <= 0:
            return []
        # Ids sort by creation: the partition read backwards is newest first.
        items, _ = await self._unit.table.query(
            keys.broadcasts(app_id), sk_to=before_id, forward=False, limit=limit + 1)
        return [broadcast_of(decode(i)) for i in items if i["sk"]["S"] != before_id][:limit]

    async def claim(self, now: datetime, lease_seconds: float, lease_id: str) -> Broadcast | None:
        taken = await lease_due(self._unit, keys.DUE_BROADCASTS, now, 1, lease_seconds, lease_id,
                                attempt=False, also=", due_at = :until")
        return broadcast_of(taken[0]) if taken else None

    async def advance(self, broadcast: Broadcast, lease_id: str,
                      lease_until: datetime | None) -> bool:
        """Read first: a lease already lost answers False (the caller drops its batch); the
        condition on the lease stays, against a takeover between this read and the commit
        (the whole unit then fails with StoreConflict)."""
        item = await self._unit.get(keys.broadcasts(broadcast.app_id), broadcast.id)
        if item is None or item.get("lease_id", {}).get("S") != lease_id:
            return False
        b = broadcast
        fields: dict[str, Any] = {
            "status": str(b.status), "cursor": b.cursor, "recipients": b.recipients,
            "expanded": b.expanded, "error": b.error, "updated_at": us(b.updated_at)}
        if lease_until is not None:
            due = us(lease_until)
            fields.update(due_at=due, lease_until=due, gsi1pk=keys.DUE_BROADCASTS,
                          gsi1sk=keys.due(due, b.id))
            gone = []
        else:
            gone = ["due_at", "lease_id", "lease_until", "gsi1pk", "gsi1sk"]
        expr, values, names = update_expression(fields, gone)
        values[":lease"] = {"S": lease_id}
        # `last`: the cursor moves only with the batch's last transaction (unit.py).
        self._unit.update(keys.broadcasts(b.app_id), b.id, expr, values=values, names=names,
                          condition="lease_id = :lease", last=True,
                          conflict=f"broadcast {b.id}: the lease was lost meanwhile")
        return True

    async def cancel(self, app_id: str, broadcast_id: str, at: datetime) -> Broadcast | None:
        """Stops the expansion (its lease no longer holds) and queues the sweep of what it had
        already written; a canceled broadcast stays as it is."""
        item = await self._unit.get(keys.broadcasts(app_id), broadcast_id)
        if item is None:
            return None
        found = broadcast_of(decode(item))
        if found.status == BroadcastStatus.CANCELED:
            return found
        when = us(at)
        expr, values, names = update_expression(
            {"status": BroadcastStatus.CANCELED.value, "due_at": when, "updated_at": when,
             "gsi1pk": keys.DUE_BROADCASTS, "gsi1sk": keys.due(when, broadcast_id)},
            ["cursor", "lease_id", "lease_until"])
        self._unit.update(keys.broadcasts(app_id), broadcast_id, expr, values=values, names=names,
                          condition="attribute_exists(pk)",
                          conflict=f"broadcast {broadcast_id} was deleted meanwhile")
        found.status, found.cursor, found.due_at, found.updated_at = (
            BroadcastStatus.CANCELED.value, None, at, at)
        return found

    async def progress(self, app_id: str, broadcast_id: str) -> Progress:
        """Counts the statuses of the notifications its recipient items name (a recipient
        whose notification went with the user counts no more, as in SQL)."""
        table = self._unit.table
        homes = [(keys.user(app_id, r["user_id"]["S"]), keys.inbox_sk(r["notification_id"]["S"]))
                 async for r in table.query_all(keys.recipients(app_id, broadcast_id))]
        counts: dict[str, int] = {}
        for start in range(0, len(homes), PROGRESS_READS):
            for item in await table.get_many(homes[start:start + PROGRESS_READS]):
                status = item["status"]["S"]
                counts[status] = counts.get(status, 0) + 1
        return Progress(counts)

    async def sweep(self, broadcast_id: str, after_user: str | None, reason: str,
                    at: datetime, limit: int) -> str | None:
        """For a canceled broadcast: cancel its recipients' still scheduled notifications,
        skip their pending deliveries (on the condition that they still are: a worker taking
        one meanwhile fails the unit, and the sweep of this batch is done again), and a
        notification none of whose deliveries went out is canceled, leaving the inbox and the
        unread counts (the SQL store's rules)."""
        found, _ = await self._unit.table.query(keys.broadcast(broadcast_id), index="gsi2", limit=1)
        if not found:
            return None
        app_id = found[0]["app_id"]["S"]
        pk = keys.recipients(app_id, broadcast_id)
        after = None if after_user is None else keys.part(after_user)
        items, _ = await self._unit.table.query(pk, sk_from=after, limit=limit + 1)
        recipients = [decode(i) for i in items if i["sk"]["S"] != after][:limit]
        if not recipients:
            return None
        await gather_bounded(lambda r: self._sweep_one(app_id, r, reason, at), recipients)
        await statuses_of(self._unit).flush()
        return str(recipients[-1]["user_id"])

    async def _sweep_one(self, app_id: str, recipient: dict[str, Any], reason: str,
                         at: datetime) -> None:
        unit = self._unit
        note_id, user_id = recipient["notification_id"], recipient["user_id"]
        item = await unit.get(keys.user(app_id, user_id), keys.inbox_sk(note_id))
        if item is None:
            return
        note = notification_of(item)
        if note.status == NotificationStatus.SCHEDULED:
            DynamoNotifications(unit).cancel_scheduled(item, at)
            return
        deliveries = await deliveries_of(unit, app_id, note_id)
        pending = [d for d in deliveries if d.status == DeliveryStatus.PENDING]
        if not pending:
            return
        when = us(at)
        for d in pending:
            expr, values, names = update_expression(
                {"status": DeliveryStatus.SKIPPED.value, "error": reason, "updated_at": when,
                 "due_ms": ms(at)}, ["due_at", "gsi1pk", "gsi1sk", "lease_id", "lease_until"])
            values[":pending"] = {"S": DeliveryStatus.PENDING.value}
            unit.update(keys.notification(app_id, note_id), keys.delivery_sk(d.id), expr,
                        values=values, names={**names, "#status": "status"},
                        condition="#status = :pending",
                        conflict=f"delivery {d.id} was taken by a worker meanwhile")
        if any(d.status not in (DeliveryStatus.PENDING, DeliveryStatus.SKIPPED)
               for d in deliveries):
            statuses_of(unit).follow(app_id, note_id,
                                     {d.id: DeliveryStatus.SKIPPED.value for d in pending})
            return
        # Nothing of it went out or was tried: the notification was canceled, not failed; it
        # leaves the inbox, and the unread counts with it.
        unit.update(item["pk"]["S"], item["sk"]["S"], "SET #status = :canceled",
                    names={"#status": "status"},
                    values={":canceled": {"S": NotificationStatus.CANCELED.value}},
                    condition="attribute_exists(pk)",
                    conflict=f"notification {note_id} was deleted meanwhile")
        if is_counted(note):
            counters_of(unit).move(app_id, user_id, int(item["channel_mask"]["N"]), -1)


def reserve(unit: Unit, app_id: str, broadcast_id: str, user_id: str,
            notification_id: str, group: str | None = None) -> None:
    """Make `notification_id` the user's one notification of the broadcast: its recipient item,
    put in this unit beside the notification on the condition that there is none (of two
    workers expanding the same batch at once, one commits; the other's unit fails with
    StoreConflict). Call `unreached` first: a batch done again after its worker died meets
    recipients it reached already, and must skip them, not fail."""
    unit.put(encode({"pk": keys.recipients(app_id, broadcast_id), "sk": keys.part(user_id),
                     "app_id": app_id, "broadcast_id": broadcast_id, "user_id": user_id,
                     "notification_id": notification_id}),
             condition="attribute_not_exists(pk)", group=group,
             conflict=f"broadcast {broadcast_id}: user {user_id} got its notification meanwhile")


async def unreached(unit: Unit, notifications: Sequence[Notification]) -> list[Notification]:
    """The notifications to write, in order: of those of a broadcast, the ones whose user the
    broadcast has not reached yet (read in batches; one per user); the others all."""
    wanted = {(keys.recipients(n.app_id, n.broadcast_id), keys.part(n.user_id)): n.id
              for n in reversed(notifications) if n.broadcast_id is not None and n.user_id is not None}
    if not wanted:
        return list(notifications)
    reached = {(i["pk"]["S"], i["sk"]["S"]) for i in await unit.table.get_many(list(wanted))}
    reached.update(k for k in wanted if unit.pending(*k) is not None)
    kept = {note_id for k, note_id in wanted.items() if k not in reached}
    return [n for n in notifications
            if n.broadcast_id is None or n.user_id is None or n.id in kept]
