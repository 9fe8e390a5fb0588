"""The outbox of outgoing app events: claimed under a lease like the delivery queue, so several
workers share it and a dead worker's events are sent again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, null, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.events import AppEvent, EventOutcome
from .leases import lease_due
from .rows import execute_many, from_ms, opt_ms, to_ms
from .schema import webhook_events

e = webhook_events.c

_RECORD = (
    update(webhook_events)
    .where(e.id == bindparam("b_id"), e.lease_id == bindparam("b_lease"))
    .values(status=bindparam("b_status"), last_error=bindparam("b_error"),
            due_at=bindparam("b_due"), updated_at=bindparam("b_at"), lease_id=null())
)


class SqlEvents:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def add(self, events: Sequence[AppEvent]) -> None:
        if not events:
            return
        await self._c.execute(insert(webhook_events), [
            {"id": ev.id, "app_id": ev.app_id, "type": ev.type, "payload": ev.payload,
             "created_at": to_ms(ev.created_at), "status": "pending", "attempts": 0,
             "last_error": None, "updated_at": to_ms(ev.created_at),
             "due_at": to_ms(ev.created_at), "lease_id": None} for ev in events])

    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[AppEvent]:
        rows = (await self._c.execute(lease_due(
            webhook_events, now, limit, lease_seconds, lease_id,
            (e.id, e.app_id, e.type, e.payload, e.created_at, e.attempts)))).all()
        # Oldest first, so that an app sees its events in the order they happened.
        return sorted((AppEvent(r[0], r[1], r[2], r[3], from_ms(r[4]), r[5], lease_id)
                       for r in rows), key=lambda ev: ev.id)

    async def record(self, outcomes: Sequence[EventOutcome]) -> int:
        if not outcomes:
            return 0
        return await execute_many(self._c, _RECORD, [
            {"b_id": o.event_id, "b_lease": o.lease_id, "b_status": o.status,
             "b_error": o.error, "b_due": opt_ms(o.due_at), "b_at": to_ms(o.at)}
            for o in outcomes])

    async def purge(self, before: datetime) -> int:
        result = await self._c.execute(delete(webhook_events).where(
            e.due_at.is_(None), e.updated_at < to_ms(before)))
        return int(result.rowcount or 0)
