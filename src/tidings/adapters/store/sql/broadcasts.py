"""Broadcasts in SQL: the broadcast rows, their worker queue (`due_at` under a lease), and
what their notifications add up to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, literal_column, null, select, update

from ....domain.broadcasts import Broadcast, BroadcastStatus, Progress
from ....domain.notifications import DeliveryStatus, NotificationStatus
from . import counters
from .queue import SqlQueue
from .rows import execute_many, from_ms, opt_dt, opt_ms, to_ms
from .schema import broadcasts, deliveries, notifications

b = broadcasts.c
n = notifications.c
d = deliveries.c


def _from(row: Any) -> Broadcast:
    return Broadcast(
        id=row.id, app_id=row.app_id, audience=row.audience, message=row.message,
        send_at=opt_dt(row.send_at), local_time=row.local_time, status=row.status,
        cursor=row.cursor, recipients=row.recipients, expanded=row.expanded, error=row.error,
        created_at=from_ms(row.created_at), updated_at=from_ms(row.updated_at),
        due_at=opt_dt(row.due_at))


def _values(x: Broadcast) -> dict[str, Any]:
    return {
        "id": x.id, "app_id": x.app_id, "audience": x.audience, "message": x.message,
        "send_at": opt_ms(x.send_at), "local_time": x.local_time, "status": x.status,
        "cursor": x.cursor, "recipients": x.recipients, "expanded": x.expanded,
        "error": x.error, "created_at": to_ms(x.created_at), "updated_at": to_ms(x.updated_at),
        "due_at": opt_ms(x.due_at), "lease_id": None,
    }


_PROGRESS = (select(n.status, func.count()).where(n.broadcast_id == bindparam("id"))
             .group_by(n.status))
_SKIP = (update(deliveries)
         .where(d.id == bindparam("b_id"), d.status == literal_column("'pending'"))
         .values(status=DeliveryStatus.SKIPPED.value, error=bindparam("b_error"),
                 updated_at=bindparam("b_at"), due_at=null(), lease_id=null()))


class SqlBroadcasts:
    def __init__(self, conn: Any) -> None:
        self._c = conn

    async def add(self, broadcast: Broadcast) -> None:
        await self._c.execute(broadcasts.insert().values(_values(broadcast)))

    async def get(self, app_id: str, broadcast_id: str) -> Broadcast | None:
        row = (await self._c.execute(select(broadcasts).where(
            b.app_id == app_id, b.id == broadcast_id))).first()
        return None if row is None else _from(row)

    async def list(self, app_id: str, limit: int, before_id: str | None) -> list[Broadcast]:
        q = select(broadcasts).where(b.app_id == app_id)
        if before_id is not None:
            q = q.where(b.id < before_id)
        return [_from(r) for r in await self._c.execute(q.order_by(b.id.desc()).limit(limit))]

    async def claim(self, now: datetime, lease_seconds: float,
                    lease_id: str) -> Broadcast | None:
        now_ms = to_ms(now)
        due = select(b.id).where(b.due_at <= now_ms).order_by(b.due_at).limit(1)
        if self._c.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        row = (await self._c.execute(
            update(broadcasts).where(b.id.in_(due.scalar_subquery()))
            .values(lease_id=lease_id, due_at=now_ms + int(lease_seconds * 1000))
            .returning(*broadcasts.c))).first()
        return None if row is None else _from(row)

    async def advance(self, broadcast: Broadcast, lease_id: str,
                      lease_until: datetime | None) -> bool:
        result = await self._c.execute(
            update(broadcasts).where(b.id == broadcast.id, b.lease_id == lease_id).values(
                status=broadcast.status, cursor=broadcast.cursor,
                recipients=broadcast.recipients, expanded=broadcast.expanded,
                error=broadcast.error, updated_at=to_ms(broadcast.updated_at),
                due_at=opt_ms(lease_until), lease_id=None if lease_until is None else lease_id))
        return bool(result.rowcount)

    async def cancel(self, app_id: str, broadcast_id: str, at: datetime) -> Broadcast | None:
        """Stops the expansion (its lease no longer holds) and queues the sweep of what it had
        already written; a canceled broadcast stays as it is."""
        ms = to_ms(at)
        await self._c.execute(update(broadcasts).where(
            b.app_id == app_id, b.id == broadcast_id,
            b.status != BroadcastStatus.CANCELED.value,
        ).values(status=BroadcastStatus.CANCELED.value, cursor=None, lease_id=None,
                 due_at=ms, updated_at=ms))
        return await self.get(app_id, broadcast_id)

    async def progress(self, app_id: str, broadcast_id: str) -> Progress:
        rows = await self._c.execute(_PROGRESS, {"id": broadcast_id})
        return Progress({status: int(count) for status, count in rows})

    async def sweep(self, broadcast_id: str, after_user: str | None, reason: str,
                    at: datetime, limit: int) -> str | None:
        q = (select(n.id, n.user_id, n.status).where(n.broadcast_id == broadcast_id)
             .order_by(n.user_id).limit(limit))
        if after_user is not None:
            q = q.where(n.user_id > after_user)
        rows = (await self._c.execute(q)).all()
        if not rows:
            return None
        ids = [r[0] for r in rows]
        scheduled = [r[0] for r in rows if r[2] == NotificationStatus.SCHEDULED]
        if scheduled:
            await self._c.execute(update(notifications).where(
                n.id.in_(scheduled), n.status == literal_column("'scheduled'"),
            ).values(status=NotificationStatus.CANCELED.value))
        pending = (await self._c.execute(select(d.id, d.notification_id).where(
            d.notification_id.in_(ids), d.status == literal_column("'pending'")))).all()
        if pending:
            await execute_many(self._c, _SKIP, [
                {"b_id": p[0], "b_error": reason, "b_at": to_ms(at)} for p in pending])
            touched = {p[1] for p in pending}
            await SqlQueue(self._c).refresh_statuses(touched)
            # Nothing of it went out or was tried: the notification was canceled, not failed;
            # it leaves the inbox, and the unread counts with it.
            gone = (await self._c.execute(
                update(notifications).where(
                    n.id.in_(list(touched)), n.status == literal_column("'failed'"),
                    ~exists().where(d.notification_id == n.id,
                                    d.status != literal_column("'skipped'")))
                .values(status=NotificationStatus.CANCELED.value)
                .returning(n.app_id, n.user_id, n.channel_mask, n.read_at))).all()
            unread = [(r[1], r[2]) for r in gone if r[1] is not None and r[3] is None]
            if unread:
                await counters.apply(self._c, counters.deltas(gone[0][0], unread, -1))
        return str(rows[-1][1])
