"""The outbox of outgoing app events on DynamoDB: one item per event in its app's partition,
listed in gsi1's due partition while it waits to be sent and taken from there under a lease
like the delivery queue (see queue.lease_due); sent or given up, it moves to gsi1's done
partition, which `purge` empties (a TTL far beyond any retention catches what it never does)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ....domain.events import AppEvent, EventOutcome
from . import keys
from .codec import at_us, decode, dumps, encode, loads, us
from .queue import lease_due
from .table import BATCH_WRITE
from .unit import ReadOnly, Unit

# gsi2sk of every event (gsi2pk = keys.event(id) finds an event by its id alone).
EVENT_SK = "EV"
# A backstop: whatever `purge` leaves is removed by the table's TTL this long after it ended.
BACKSTOP_SECONDS = 90 * 24 * 3600


def _event_of(doc: dict[str, Any]) -> AppEvent:
    return AppEvent(doc["event_id"], doc["app_id"], doc["type"], loads(doc["payload"]),
                    _at(doc["created_at"]), int(doc.get("attempts", 0)), doc.get("lease_id"))


def _at(value: int) -> datetime:
    found = at_us(value)
    assert found is not None
    return found


class DynamoEvents:
    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        # The events this unit adds, still unwritten: a claim in the same unit sees them.
        self._added: dict[str, dict[str, Any]] = {}

    async def add(self, events: Sequence[AppEvent]) -> None:
        for ev in events:
            created = us(ev.created_at)
            doc = {
                "pk": keys.events(ev.app_id), "sk": ev.id, "app_id": ev.app_id,
                "event_id": ev.id, "type": ev.type, "payload": dumps(ev.payload),
                "created_at": created, "updated_at": created, "status": "pending",
                "attempts": 0, "gsi1pk": keys.sharded(keys.DUE_EVENTS, ev.id),
                "gsi1sk": keys.due(created, ev.id),
                "gsi2pk": keys.event(ev.id), "gsi2sk": EVENT_SK}
            self._unit.put(encode(doc), condition="attribute_not_exists(pk)",
                           conflict=f"event {ev.id} exists")
            self._added[ev.id] = doc

    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[AppEvent]:
        if not self._unit.writable:
            raise ReadOnly("this is a read-only unit of work")
        now_us, until_us = us(now), us(now) + int(lease_seconds * 1_000_000)
        taken: list[dict[str, Any]] = []
        for event_id, doc in sorted(self._added.items()):
            if len(taken) >= limit:
                break
            if keys.in_shards(doc.get("gsi1pk"), keys.DUE_EVENTS) and \
                    doc["gsi1sk"] <= keys.due(now_us + 1):
                doc.update(lease_id=lease_id, lease_until=until_us, updated_at=now_us,
                           attempts=doc["attempts"] + 1, gsi1sk=keys.due(until_us, event_id))
                self._unit.put(encode(doc))  # replaces the buffered put, keeping its condition
                taken.append(doc)
        if len(taken) < limit:
            taken += await lease_due(self._unit, keys.DUE_EVENTS, now, limit - len(taken),
                                     lease_seconds, lease_id, sharded=True)
        # Oldest first, so that an app sees its events in the order they happened.
        return sorted((_event_of(doc) for doc in taken), key=lambda ev: ev.id)

    async def record(self, outcomes: Sequence[EventOutcome]) -> int:
        """Takes the outcomes whose lease still holds (read first: a lost lease drops only its
        own outcome; the condition on the lease stays, against a worker taking it meanwhile)."""
        if not outcomes:
            return 0
        found = await self._find([o.event_id for o in outcomes])
        taken = 0
        done: set[str] = set()
        for o in outcomes:
            doc = found.get(o.event_id)
            if doc is None or o.event_id in done or doc.get("lease_id") != o.lease_id:
                continue
            done.add(o.event_id)
            at = us(o.at)
            values: dict[str, Any] = {
                ":status": o.status, ":at": at, ":lease": o.lease_id,
                ":part": keys.sharded(keys.DUE_EVENTS if o.due_at is not None
                                      else keys.DONE_EVENTS, o.event_id),
                ":sort": keys.due(us(o.due_at) if o.due_at is not None else at, o.event_id)}
            expr = "SET #status = :status, updated_at = :at, gsi1pk = :part, gsi1sk = :sort"
            if o.due_at is None:
                expr += ", #ttl = :ttl"
                values[":ttl"] = int(o.at.timestamp()) + BACKSTOP_SECONDS
            if o.error is not None:
                expr += ", #error = :error"
                values[":error"] = o.error
            expr += " REMOVE lease_id, lease_until" + ("" if o.error is not None else ", #error")
            self._unit.update(
                doc["pk"], doc["sk"], expr, condition="lease_id = :lease",
                values=encode(values),
                names={"#status": "status", "#error": "error",
                       **({"#ttl": "ttl"} if o.due_at is None else {})},
                conflict=f"event {o.event_id}: another worker took it over")
            taken += 1
        return taken

    async def _find(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The events by id, read from the table (gsi2 names their partitions)."""
        table = self._unit.table

        async def where(event_id: str) -> tuple[str, str] | None:
            items, _ = await table.query(keys.event(event_id), index="gsi2", limit=1)
            return (items[0]["pk"]["S"], items[0]["sk"]["S"]) if items else None

        located = [k for k in await asyncio.gather(*map(where, dict.fromkeys(event_ids))) if k]
        return {doc["event_id"]: doc for doc in map(decode, await table.get_many(located))}

    async def purge(self, before: datetime) -> int:
        """Deletes at once, outside the unit's transaction: nothing depends on them, and a
        purge cut short is simply continued by the next."""
        if not self._unit.writable:
            raise ReadOnly("this is a read-only unit of work")
        table = self._unit.table
        batch: list[tuple[str, str]] = []
        gone = 0
        for shard in keys.shards(keys.DONE_EVENTS):
            async for item in table.query_all(shard, index="gsi1", sk_to=keys.due(us(before))):
                batch.append((item["pk"]["S"], item["sk"]["S"]))
                if len(batch) == BATCH_WRITE:
                    gone += await table.delete_many(batch)
                    batch = []
        return gone + await table.delete_many(batch)
