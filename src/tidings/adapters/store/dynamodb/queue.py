"""The delivery queue on DynamoDB: the delivery items of each notification's partition (see
notifications.py), listed by due time in gsi1's partition `keys.DUE_DELIVERIES` while they
are pending or held under a lease.

Polling workers (and the contract tests) `claim` from that index; the serverless worker is
handed delivery ids by SQS and takes them with `claim_ids`. Either way a delivery is taken by
a conditional update of its own, at once (see `take`), so that two workers never hold one
delivery. `record` and `receipt` write in the unit of work; the notification's status follows
its deliveries' at commit (see `NotificationStatuses`)."""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ....domain.delivery import Claim, OutboundMessage, Outcome
from ....domain.notifications import (
    OPEN_STATUSES,
    Delivery,
    DeliveryStatus,
)
from ....domain.receipts import Receipt, next_status
from . import keys
from .codec import Item, at_us, decode, encode, loads, ms, unpacked, us
from .devices import POINTER as DEVICE_POINTER
from .devices import device_of
from .notifications import (
    deliveries_status,
    delivery_of,
    followed_status,
    home_of,
    set_status,
)
from .table import Table
from .unit import ReadOnly, Unit, gather_bounded

log = logging.getLogger("tidings.store.dynamodb")

_DELIVERIES = keys.delivery_sk("")
# Notifications whose status one unit follows under the version guard (each is one more
# optimistic write of the unit's last transaction, which takes 100 items in all).
GUARDED_STATUSES = 40
_NO_OPTIONS: dict[str, Any] = {}


# Taking due items under a lease (the delivery queue, app events, broadcasts) ------------------

async def take(unit: Unit, item: Item, partition: str, now: datetime, lease_seconds: float,
               lease_id: str, *, attempt: bool = True, also: str = "",
               values: dict[str, Any] | None = None,
               names: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Take one item of a due partition of gsi1 (one of `partition`'s shards, or `partition`
    itself when it has none) under the lease: it gets `lease_id`, the
    lease's end as its due time (it is due again, should its worker die), and with `attempt`
    one more attempt; `also` adds to the update (`:until` is the lease's end in µs). The
    condition is the item's due key as `item` shows it: None when somebody took or changed
    the item since (another worker's claim, a record, a receipt).

    A conditional UpdateItem of its own, at once, not a write of the unit: two workers that
    read the same due items each take what the other did not, where one transaction would
    fail as a whole."""
    if not unit.writable:
        raise ReadOnly("this is a read-only unit of work")
    part = item.get("gsi1pk", {}).get("S")
    if part != partition and not keys.in_shards(part, partition):
        return None
    client = await unit.table.client()
    now_us = us(now)
    until_us = us(now + timedelta(seconds=lease_seconds))
    seen = item["gsi1sk"]["S"]
    expression = "SET lease_id = :lease, lease_until = :until, gsi1sk = :next"
    extra: dict[str, Any] = {}
    if attempt:
        expression += ", updated_at = :now, attempts = if_not_exists(attempts, :zero) + :one"
        extra = {":now": {"N": str(now_us)}, ":zero": {"N": "0"}, ":one": {"N": "1"}}
    try:
        answer = await client.update_item(
            TableName=unit.table.name, Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression=expression + also,
            ConditionExpression="gsi1pk = :part AND gsi1sk = :seen",
            ExpressionAttributeValues={
                ":lease": {"S": lease_id}, ":until": {"N": str(until_us)},
                ":next": {"S": keys.due(until_us, *seen.split("#", 1)[1:])},
                ":part": {"S": part}, ":seen": {"S": seen}, **extra, **(values or {})},
            **({"ExpressionAttributeNames": names} if names else {}),
            ReturnValues="ALL_NEW")
    except client.exceptions.ConditionalCheckFailedException:
        return None
    return decode(answer["Attributes"])


async def lease_due(unit: Unit, partition: str, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str, *, sharded: bool = False, **options: Any) -> list[dict[str, Any]]:
    """Take (see `take`) up to `limit` items of a due partition whose time has come, oldest
    first, reading on past the ones other workers take meanwhile. `sharded`: the partition is
    spread over `keys.shards`; the oldest of each shard's first page are taken, and what
    other workers took meanwhile is made up by the next call."""
    taken: list[dict[str, Any]] = []
    bound = keys.due(us(now) + 1)

    async def take_all(items: list[Item]) -> None:
        at = 0
        while at < len(items) and len(taken) < limit:
            batch = items[at:at + limit - len(taken)]
            at += len(batch)
            found = await gather_bounded(
                lambda i: take(unit, i, partition, now, lease_seconds, lease_id, **options), batch)
            taken.extend(t for t in found if t is not None)

    if sharded:
        pages = await gather_bounded(
            lambda shard: unit.table.query(shard, index="gsi1", sk_to=bound, limit=max(limit, 10)),
            keys.shards(partition))
        await take_all(sorted((i for page, _ in pages for i in page),
                              key=lambda i: i["gsi1sk"]["S"]))
        return taken
    start: dict[str, Any] | None = None
    while len(taken) < limit:
        items, start = await unit.table.query(
            partition, index="gsi1", sk_to=bound, limit=max(limit - len(taken), 10), start=start)
        await take_all(items)
        if start is None:
            break
    return taken


async def oldest(unit: Unit, partition: str, before: int, limit: int) -> list[Item]:
    """Up to `limit` items of `partition`'s shards listed before `before` (µs) in gsi1, oldest
    first."""
    pages = await gather_bounded(
        lambda shard: unit.table.query(shard, index="gsi1", sk_to=keys.due(before), limit=limit),
        keys.shards(partition))
    return sorted((i for page, _ in pages for i in page), key=lambda i: i["gsi1sk"]["S"])[:limit]


def update_expression(fields: Mapping[str, Any],
                      remove: Sequence[str] = ()) -> tuple[str, dict[str, Any], dict[str, str]]:
    """SET the fields with a value, REMOVE those that are None and those in `remove`; every
    name through a placeholder (`status`, `error`, `cursor` are reserved words)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets: list[str] = []
    gone: list[str] = []
    for i, (name, value) in enumerate(fields.items()):
        names[f"#f{i}"] = name
        if value is None:
            gone.append(f"#f{i}")
        else:
            values[f":f{i}"] = encode({"v": value})["v"]
            sets.append(f"#f{i} = :f{i}")
    for j, name in enumerate(remove):
        names[f"#r{j}"] = name
        gone.append(f"#r{j}")
    parts = []
    if sets:
        parts.append("SET " + ", ".join(sets))
    if gone:
        parts.append("REMOVE " + ", ".join(gone))
    return " ".join(parts), values, names


# The notifications' status ------------------------------------------------------------------

class NotificationStatuses:
    """The statuses of the notifications whose deliveries one unit of work changes, written
    at its commit, from the deliveries as they are then (with this unit's changes).

    Two workers recording two deliveries of one notification at once would each read the
    other's as still open and leave it `queued` for good. So the status is written under a
    version (`sv` of the inbox item), read before the deliveries, as an optimistic write: of
    two such units one commits; the other's condition fails, and it reads again — now with the
    first one's delivery — and writes again (unit.py). Past `GUARDED_STATUSES` notifications
    in one unit (a large polling batch; the last transaction holds 100 items) the rest are
    written plainly, from the deliveries as the unit records them (as the SQL store does)."""

    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        # (app, notification) -> {delivery id: its status as this unit writes it}
        self._changed: dict[tuple[str, str], dict[str, str]] = {}
        self._guarded: set[tuple[str, str]] = set()
        self._plain: dict[tuple[str, str], bool] = {}  # -> written yet
        unit.before_commit(self._write)

    def follow(self, app_id: str, notification_id: str,
               changes: Mapping[str, str] | None = None) -> None:
        """The notification's deliveries change in this unit (`changes`: id -> new status)."""
        key = (app_id, notification_id)
        self._changed.setdefault(key, {}).update(changes or {})
        if key in self._guarded or key in self._plain:
            return
        if len(self._guarded) < GUARDED_STATUSES:
            self._guarded.add(key)
        else:
            self._plain[key] = False

    async def flush(self) -> None:
        """Write the statuses beyond the guarded ones (once per notification and unit), from
        the deliveries as they are now. Each such write moves the version too, so that a
        guarded writer that read before it reads again."""
        todo = [key for key, written in self._plain.items() if not written]
        for key in todo:
            self._plain[key] = True
        await gather_bounded(self._write_plain, todo)

    async def _write_plain(self, key: tuple[str, str]) -> None:
        found = await followed_status(self._unit, key[0], key[1], self._changed[key])
        if found is None:
            return
        item, status = found
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        earlier = self._unit.pending(pk, sk)
        if earlier is not None:
            if earlier.kind == "Put" and status != item["status"]["S"]:
                set_status(self._unit, item, status)
            return
        self._unit.update(pk, sk, "SET #status = :status ADD sv :one",
                          names={"#status": "status"},
                          values={":status": {"S": status}, ":one": {"N": "1"}},
                          condition="attribute_exists(pk)",
                          conflict=f"notification {key[1]} was deleted meanwhile")

    async def _write(self, unit: Unit, groups: frozenset[str] | None) -> None:
        await gather_bounded(lambda key: self._write_one(key, groups), sorted(self._guarded))

    async def _write_one(self, key: tuple[str, str], groups: frozenset[str] | None) -> None:
        app_id, notification_id = key
        unit = self._unit
        pk = await home_of(unit, app_id, notification_id)
        if pk is None:
            return  # deleted meanwhile
        sk = keys.inbox_sk(notification_id)
        if groups is not None and pk not in groups:
            return  # another group is being made again, not this one
        if unit.pending(pk, sk) is not None:
            return  # this unit writes the item otherwise (and decided its status)
        # The version first, then the deliveries: a unit that committed a delivery after this
        # read has moved the version too, and this write fails on it.
        item = await unit.table.get(pk, sk)
        if item is None:
            return
        status = deliveries_status(
            [i async for i in unit.table.query_all(keys.notification(app_id, notification_id),
                                                   sk_prefix=_DELIVERIES)], self._changed[key])
        if status is None:
            return
        guard = {":sv": item["sv"]} if "sv" in item else {}
        version = int(item["sv"]["N"]) if "sv" in item else 0
        unit.update(pk, sk, "SET #status = :status, sv = :next", names={"#status": "status"},
                    values={":status": {"S": status}, ":next": {"N": str(version + 1)}, **guard},
                    condition="attribute_exists(pk) AND "
                              + ("sv = :sv" if guard else "attribute_not_exists(sv)"),
                    optimistic=True)


def statuses_of(unit: Unit) -> NotificationStatuses:
    """The unit's one NotificationStatuses (made on first use)."""
    found = unit.shared.get("notification_statuses")
    if not isinstance(found, NotificationStatuses):
        found = unit.shared["notification_statuses"] = NotificationStatuses(unit)
    return found


# Which app a claimed delivery belongs to ---------------------------------------------------

# An outcome names its delivery by id and notification id; the item's key needs the app too.
# The claim knows it: remembered here per store (bounded), forgotten when recorded.
_APPS: weakref.WeakKeyDictionary[Table, OrderedDict[str, str]] = weakref.WeakKeyDictionary()
_REMEMBERED = 100_000


def _remember(table: Table, claims: Sequence[Claim]) -> None:
    apps = _APPS.setdefault(table, OrderedDict())
    for c in claims:
        apps[c.delivery_id] = c.app_id
        apps.move_to_end(c.delivery_id)
    while len(apps) > _REMEMBERED:
        apps.popitem(last=False)


# The repository ----------------------------------------------------------------------------

class DynamoQueue:
    def __init__(self, unit: Unit) -> None:
        self._unit = unit

    def _sending(self, now: datetime, lease_seconds: float) -> dict[str, Any]:
        until = now + timedelta(seconds=lease_seconds)
        return {"also": ", #status = :sending, due_at = :until, due_ms = :until_ms",
                "values": {":sending": {"S": DeliveryStatus.SENDING.value},
                           ":until_ms": {"N": str(ms(until))}},
                "names": {"#status": "status"}}

    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[Claim]:
        taken = await lease_due(self._unit, keys.DUE_DELIVERIES, now, limit, lease_seconds,
                                lease_id, sharded=True, **self._sending(now, lease_seconds))
        return await self._claims(taken, lease_id)

    async def overdue(self, before: datetime, limit: int) -> list[tuple[str, str, str]]:
        """(app_id, notification_id, delivery_id) of up to `limit` deliveries due before
        `before` and still not done, oldest first: on AWS, those whose queue message was lost
        (moved to the dead-letter queue, or never sent), to be queued again."""
        out = []
        for item in await oldest(self._unit, keys.DUE_DELIVERIES, us(before), limit):
            ids = tuple(item.get(name, {}).get("S") for name in
                        ("app_id", "notification_id", "delivery_id"))
            if all(ids):
                out.append((str(ids[0]), str(ids[1]), str(ids[2])))
        return out

    async def claim_ids(self, ids: Sequence[tuple[str, str, str]], now: datetime,
                        lease_seconds: float,
                        lease_id: str) -> tuple[list[Claim], dict[str, datetime]]:
        """Take the deliveries the queue handed over, named by (app, notification, delivery):
        those pending and due, or whose lease expired, are claimed; for those not due yet
        (pending a retry, or held under another worker's live lease: its worker may die) the
        time they are due, to hand them back to the queue until then. A delivery that is gone
        or final is in neither: its message is done."""
        if not ids:
            return [], {}
        items = await self._unit.table.get_many(
            [(keys.notification(app, nid), keys.delivery_sk(did)) for app, nid, did in ids])
        now_us = us(now)
        due: list[Item] = []
        later: dict[str, datetime] = {}
        for item in items:
            if item.get("status", {}).get("S") not in OPEN_STATUSES or "gsi1sk" not in item:
                continue
            try:
                at = int(item["gsi1sk"]["S"].split("#", 1)[0])
            except (KeyError, ValueError) as exc:
                _undecodable(item, exc)
                continue
            if at <= now_us:
                due.append(item)
            else:
                when = at_us(at)
                assert when is not None
                later[item["delivery_id"]["S"]] = when
        options = self._sending(now, lease_seconds)
        taken = await gather_bounded(
            lambda i: take(self._unit, i, keys.DUE_DELIVERIES, now, lease_seconds, lease_id,
                           **options), due)
        return await self._claims([t for t in taken if t is not None], lease_id), later

    async def _claims(self, taken: list[dict[str, Any]], lease_id: str) -> list[Claim]:
        """The claims of the deliveries taken, each with its message as the provider sees it:
        the notification's content, and for a push its device's token (None when the device
        was removed or disabled since)."""
        if not taken:
            return []
        table = self._unit.table
        notes = await self._contents({(d["app_id"], d["notification_id"]) for d in taken
                                      if d.get("app_id") and d.get("notification_id")})
        devices = await self._devices({(d["app_id"], d.get("user_id"), d["target"]) for d in taken
                                       if d.get("channel") == "push" and d.get("target")
                                       and d.get("app_id")})
        claims = []
        for d in taken:
            try:
                claims.append(self._claim(d, notes, devices, lease_id))
            except (KeyError, TypeError, ValueError) as exc:
                # One broken item must not fail the others' batch: it stays leased, comes
                # back when the lease ends, and is logged each time until somebody mends it.
                _undecodable(d, exc)
        _remember(table, claims)
        return claims

    @staticmethod
    def _claim(d: dict[str, Any], notes: dict[tuple[str, str], dict[str, Any] | None],
               devices: dict[tuple[str, str], Any], lease_id: str) -> Claim:
        app_id, note_id, channel = d["app_id"], d["notification_id"], d["channel"]
        target = d.get("target")
        note = notes.get((app_id, note_id))
        if note is None and (app_id, note_id) in notes:
            raise ValueError(f"its notification {note_id} does not decode")
        platform = device_id = ref = None
        if channel == "push":
            device_id = target
            dev = devices.get((app_id, target or ""))
            platform, ref = (dev.platform, dev.provider_ref) if dev else (None, None)
            target = dev.token if dev is not None and dev.enabled else None
        attempts = int(d.get("attempts", 0))
        message = None
        if note is not None and target:
            options = unpacked(note.get("options")) or _NO_OPTIONS
            message = OutboundMessage(
                d["delivery_id"], note_id, app_id, d.get("user_id"), channel, d["provider"],
                target, platform, note.get("title"), note.get("body"),
                loads(note.get("data")) or {}, note.get("category"), note.get("message_ttl"),
                note.get("priority") or "normal", attempts, device_id, options.get("html"),
                options.get("collapse_key"), options.get("overrides") or {}, ref)
        return Claim(d["delivery_id"], note_id, app_id, d["provider"], attempts, lease_id, message)

    async def _contents(self, notes: set[tuple[str, str]]
                        ) -> dict[tuple[str, str], dict[str, Any] | None]:
        table = self._unit.table
        pointers = await table.get_many([(keys.notification(a, n), keys.POINTER) for a, n in notes])
        homes = [(p["home"]["S"], keys.inbox_sk(p["notification_id"]["S"])) for p in pointers
                 if "S" in p.get("home", {}) and "S" in p.get("notification_id", {})]
        found: dict[tuple[str, str], dict[str, Any] | None] = {}
        for item in await table.get_many(homes):
            try:
                v = decode(item)
                found[(v["app_id"], v["id"])] = v
            except (KeyError, TypeError, ValueError) as exc:
                _undecodable(item, exc)
                # None: there, but unreadable (`_claim` leaves its deliveries out).
                found[(item.get("app_id", {}).get("S", ""), item.get("id", {}).get("S", ""))] = None
        return found

    async def _devices(self, wanted: set[tuple[str, str | None, str]]) -> dict[tuple[str, str], Any]:
        """Devices by (app, id): looked for in the delivery's user's partition, then (moved to
        another user since) through the device's pointer, as the SQL store finds a device by
        id alone."""
        table = self._unit.table
        found = {(d.app_id, d.id): d for d in map(device_of, await table.get_many(
            [(keys.user(app, user), keys.device_sk(dev)) for app, user, dev in wanted if user]))}
        missing = [(app, dev) for app, _, dev in wanted if (app, dev) not in found]
        if missing:
            pointers = await table.get_many([(keys.device(app, dev), DEVICE_POINTER)
                                             for app, dev in missing])
            moved = await table.get_many([
                (keys.user(p["app_id"]["S"], p["user_id"]["S"]), keys.device_sk(p["device_id"]["S"]))
                for p in pointers])
            found.update({(d.app_id, d.id): d for d in map(device_of, moved)})
        return found

    async def record(self, outcomes: Sequence[Outcome]) -> int:
        """Takes the outcomes of deliveries still under their lease: read first, so that a lost
        lease drops only its own outcome; the condition on the lease stays against a takeover
        between the read and the commit (the unit then fails with StoreConflict)."""
        if not outcomes:
            return 0
        apps = _APPS.get(self._unit.table, OrderedDict())
        where = {o.delivery_id: (apps[o.delivery_id], o.notification_id) for o in outcomes
                 if o.delivery_id in apps}
        for o in outcomes:
            if o.delivery_id not in where:
                log.warning("delivery %s: not claimed by this process (or recorded already): "
                            "its outcome is dropped, and its lease runs out", o.delivery_id)
        items = {i["delivery_id"]["S"]: i for i in await self._unit.table.get_many(
            [(keys.notification(app, nid), keys.delivery_sk(did))
             for did, (app, nid) in where.items()])}
        statuses = statuses_of(self._unit)
        devices: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = {}
        done: set[str] = set()
        taken = 0
        for o in outcomes:
            item = items.get(o.delivery_id)
            if item is None:
                continue
            d = decode(item)
            app_id = d["app_id"]
            # As in SQL: what the provider said of the device holds whoever holds the lease.
            if o.disable_device:
                devices.setdefault((app_id, o.disable_device), (d.get("user_id"), {}))[1].update(
                    enabled=False, disabled_reason=o.disable_reason)
            if o.device_ref:
                devices.setdefault((app_id, o.device_ref[0]), (d.get("user_id"), {}))[1][
                    "provider_ref"] = o.device_ref[1]
            if o.delivery_id in done or d.get("lease_id") != o.lease_id:
                statuses.follow(app_id, o.notification_id)
                continue
            done.add(o.delivery_id)
            self._write_outcome(d, o)
            statuses.follow(app_id, o.notification_id, {o.delivery_id: o.status.value})
            apps.pop(o.delivery_id, None)
            taken += 1
        await statuses.flush()
        await self._change_devices(devices)
        return taken

    def _write_outcome(self, d: dict[str, Any], o: Outcome) -> None:
        at = us(o.at)
        due = None if o.due_at is None else us(o.due_at)
        fields: dict[str, Any] = {
            "status": o.status.value, "updated_at": at, "error": o.error,
            "provider_message_id": o.provider_message_id, "due_at": due,
            "due_ms": ms(o.due_at if o.due_at is not None else o.at),
            "gsi1pk": None if due is None else keys.sharded(keys.DUE_DELIVERIES, o.delivery_id),
            "gsi1sk": None if due is None else keys.due(due, o.delivery_id)}
        if o.status == DeliveryStatus.SENT and o.provider_message_id:
            fields["gsi2pk"] = keys.provider_message(d["app_id"], d["provider"],
                                                     o.provider_message_id)
            fields["gsi2sk"] = o.delivery_id
        expr, values, names = update_expression(fields, ["lease_id", "lease_until"])
        values[":lease"] = {"S": o.lease_id}
        self._unit.update(d["pk"], d["sk"], expr, values=values, names=names,
                          condition="lease_id = :lease",
                          conflict=f"delivery {o.delivery_id}: another worker took it over")

    async def _change_devices(
            self, changes: dict[tuple[str, str], tuple[str | None, dict[str, Any]]]) -> None:
        """Disable the devices reported gone, keep the providers' references (by device id,
        the user of the delivery being where to look first); a device deleted since is left
        alone."""
        if not changes:
            return
        found = await self._devices({(app, user, dev) for (app, dev), (user, _) in changes.items()})
        for (app_id, device_id), (_, fields) in changes.items():
            dev = found.get((app_id, device_id))
            if dev is None:
                continue
            pk, sk = keys.user(app_id, dev.user_id), keys.device_sk(device_id)
            if self._unit.pending(pk, sk) is not None:
                continue  # changed by this unit otherwise
            expr, values, names = update_expression(fields)
            self._unit.update(pk, sk, expr, values=values, names=names,
                              condition="attribute_exists(pk)",
                              conflict=f"device {device_id} was deleted or moved meanwhile")

    async def receipt(self, app_id: str, receipt: Receipt) -> tuple[Delivery, bool] | None:
        wanted = keys.provider_message(app_id, receipt.provider, receipt.provider_message_id)
        found, _ = await self._unit.table.query(wanted, index="gsi2", limit=1)
        if not found:
            return None
        # The index may lag: the item itself (as this unit sees it) decides.
        item = await self._unit.get(found[0]["pk"]["S"], found[0]["sk"]["S"])
        if item is None or item.get("gsi2pk", {}).get("S") != wanted:
            return None
        delivery = delivery_of(item)
        new = next_status(delivery.status, receipt)
        if new is None:
            return delivery, False
        # A receipt ends the delivery: it leaves the queue, and its lease (if a worker still
        # holds one) no longer counts, so a late worker record cannot undo it. The item is
        # put whole: a second receipt in this unit puts it again (an update could not).
        delivery.status, delivery.updated_at, delivery.due_at = new.value, receipt.at, None
        delivery.error = receipt.error if new == DeliveryStatus.FAILED else None
        changed = {k: v for k, v in item.items() if k not in (
            "error", "due_at", "gsi1pk", "gsi1sk", "lease_id", "lease_until")}
        changed.update(encode({"status": new.value, "updated_at": us(receipt.at),
                               "due_ms": ms(receipt.at), "error": delivery.error}))
        self._unit.put_again(changed, condition="#status = :seen", names={"#status": "status"},
                             values={":seen": item["status"]},
                             conflict=f"delivery {delivery.id} changed meanwhile")
        statuses = statuses_of(self._unit)
        statuses.follow(app_id, delivery.notification_id, {delivery.id: new.value})
        await statuses.flush()
        return delivery, True


def _undecodable(item: dict[str, Any], exc: Exception) -> None:
    pk = item.get("pk")
    log.error("delivery item %s does not decode (%s: %s); left out of this batch",
              item.get("delivery_id") or (pk.get("S") if isinstance(pk, dict) else pk),
              type(exc).__name__, exc)
