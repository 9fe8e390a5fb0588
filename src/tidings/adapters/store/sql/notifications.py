"""Notifications (the inbox) and their deliveries (the outbox) in SQL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, bindparam, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.notifications import (
    CHANNEL_BITS,
    Channel,
    Notification,
    NotificationStatus,
    channel_mask,
    feed_channels,
)
from ....ports import InboxQuery
from . import counters
from .rows import (
    delivery_from,
    delivery_values,
    execute_many,
    notification_from,
    notification_values,
    to_ms,
)
from .schema import deliveries, notifications

_NO_FILTER = InboxQuery()
_INSERT_NOTIFICATIONS = insert(notifications)
_INSERT_DELIVERIES = insert(deliveries)


_n = notifications.c
# Scheduled notifications wait outside the inbox until they are sent (and canceled ones never
# enter it). Literals, not parameters: the partial index of the scheduler's queue matches them.
_VISIBLE = _n.status.notin_([literal_column("'scheduled'"), literal_column("'canceled'")])
_SCHEDULED = _n.status == literal_column("'scheduled'")
_FIRST_PAGE = (select(notifications)
               .where(_n.app_id == bindparam("app"), _n.user_id == bindparam("user"), _VISIBLE)
               .order_by(_n.id.desc()).limit(bindparam("limit")))


_JSON_COLUMNS = [i for i, c in enumerate(notifications.c)
                 if c.name in ("recipient", "channels", "data", "options")]
_JSON_NAMES = [notifications.c[i].name for i in _JSON_COLUMNS]


async def _insert_notifications(conn: Any, values: list[dict[str, Any]]) -> None:
    """Many rows at once; on SQLite straight through the driver with the JSON columns encoded
    here (SQLAlchemy's per-row parameter processing cost more than the insert itself)."""
    plain = getattr(conn, "executemany_plain", None)
    if plain is None:
        await conn.execute(_INSERT_NOTIFICATIONS, values)
        return
    dumps = orjson.dumps
    await plain(_INSERT_NOTIFICATIONS, [
        {**v, **{name: None if v[name] is None else dumps(v[name]).decode()
                 for name in _JSON_NAMES}} for v in values])


def _decoded(row: tuple[Any, ...]) -> list[Any]:
    """A raw sqlite3 row with its JSON columns decoded, as SQLAlchemy would give it."""
    values = list(row)
    for i in _JSON_COLUMNS:
        if values[i] is not None:
            values[i] = orjson.loads(values[i])
    return values


def _channel_clause(channel: str | None) -> ColumnElement[bool] | None:
    if channel is None:
        return None
    return notifications.c.channel_mask.op("&")(CHANNEL_BITS[Channel(channel)]) != 0


class SqlNotifications:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def add_many(self, items: Sequence[Notification]) -> None:
        if not items:
            return
        values = [notification_values(n, channel_mask(feed_channels(n))) for n in items]
        await _insert_notifications(self._c, values)
        rows = [delivery_values(d) for n in items for d in n.deliveries]
        if rows:
            await execute_many(self._c, _INSERT_DELIVERIES, rows)
        await self._count_unread(values)

    async def _count_unread(self, values: Sequence[dict[str, Any]]) -> None:
        by_app: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for v in values:
            if (v["user_id"] is not None and v["read_at"] is None
                    and v["status"] != NotificationStatus.SCHEDULED):
                by_app[v["app_id"]].append((v["user_id"], v["channel_mask"]))
        for app_id, unread in by_app.items():
            await counters.apply(self._c, counters.deltas(app_id, unread, +1))

    async def _attach(self, items: list[Notification]) -> list[Notification]:
        if not items:
            return items
        by_id = {n.id: n for n in items}
        rows = await self._c.execute(
            select(deliveries).where(deliveries.c.notification_id.in_(list(by_id)))
            .order_by(deliveries.c.id))
        for r in rows:
            by_id[r.notification_id].deliveries.append(delivery_from(r))
        return items

    async def get(self, app_id: str, notification_id: str) -> Notification | None:
        row = (await self._c.execute(select(notifications).where(
            notifications.c.app_id == app_id, notifications.c.id == notification_id))).first()
        if row is None:
            return None
        return (await self._attach([notification_from(row)]))[0]

    async def inbox(self, app_id: str, user_id: str, query: InboxQuery, limit: int,
                    with_deliveries: bool = True) -> list[Notification]:
        if query == _NO_FILTER:  # the first page of the whole inbox: the hot path
            params = {"app": app_id, "user": user_id, "limit": limit}
            plain = getattr(self._c, "fetch_plain", None)
            if plain is not None:
                items = [notification_from(_decoded(r)) for r in await plain(_FIRST_PAGE, params)]
            else:
                items = [notification_from(r) for r in await self._c.execute(_FIRST_PAGE, params)]
            return await self._attach(items) if with_deliveries else items
        t = notifications.c
        q = select(notifications).where(t.app_id == app_id, t.user_id == user_id, _VISIBLE)
        if query.unread_only:
            q = q.where(t.read_at.is_(None))
        if query.after_id is not None:
            q = q.where(t.id >= query.after_id)
        if query.before_id is not None:
            q = q.where(t.id < query.before_id)
        channel = _channel_clause(query.channel)
        if channel is not None:
            q = q.where(channel)
        rows = await self._c.execute(q.order_by(t.id.desc()).limit(limit))
        items = [notification_from(r) for r in rows]
        return await self._attach(items) if with_deliveries else items

    async def unread_count(self, app_id: str, user_id: str, channel: str | None) -> int:
        return await counters.read(self._c, app_id, user_id, channel)

    async def mark_read(self, app_id: str, user_id: str, notification_id: str,
                        at: datetime) -> tuple[Notification, bool] | None:
        t = notifications.c
        mine = and_(t.app_id == app_id, t.user_id == user_id, t.id == notification_id, _VISIBLE)
        changed = (await self._c.execute(
            update(notifications).where(mine, t.read_at.is_(None)).values(read_at=to_ms(at))
            .returning(t.channel_mask))).all()
        if changed:
            await counters.apply(self._c, counters.deltas(
                app_id, [(user_id, changed[0][0])], -1))
        row = (await self._c.execute(select(notifications).where(mine))).first()
        if row is None:
            return None
        return (await self._attach([notification_from(row)]))[0], bool(changed)

    async def mark_all_read(self, app_id: str, user_id: str, channel: str | None,
                            before_id: str | None, at: datetime) -> int:
        t = notifications.c
        q = update(notifications).where(t.app_id == app_id, t.user_id == user_id,
                                        t.read_at.is_(None), _VISIBLE)
        if before_id is not None:
            q = q.where(t.id < before_id)
        clause = _channel_clause(channel)
        if clause is not None:
            q = q.where(clause)
        masks = (await self._c.execute(
            q.values(read_at=to_ms(at)).returning(t.channel_mask))).all()
        if masks:
            await counters.apply(self._c, counters.deltas(
                app_id, ((user_id, m) for (m,) in masks), -1))
        return len(masks)

    async def by_address(self, app_id: str, address: str, limit: int,
                         before_id: str | None) -> list[Notification]:
        t = notifications.c
        q = select(notifications).where(t.app_id == app_id, t.to_address == address)
        if before_id is not None:
            q = q.where(t.id < before_id)
        rows = await self._c.execute(q.order_by(t.id.desc()).limit(limit))
        return await self._attach([notification_from(r) for r in rows])

    async def due(self, now: datetime, limit: int) -> list[Notification]:
        q = (select(notifications).where(_SCHEDULED, _n.send_at <= to_ms(now))
             .order_by(_n.send_at).limit(limit))
        if self._c.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return [notification_from(r) for r in await self._c.execute(q)]

    async def fire(self, items: Sequence[Notification]) -> None:
        if not items:
            return
        rows = [delivery_values(d) for n in items for d in n.deliveries]
        if rows:
            await self._c.execute(_INSERT_DELIVERIES, rows)
        values = [{"b_id": n.id, "b_status": n.status,
                   "b_mask": channel_mask(feed_channels(n))} for n in items]
        await execute_many(self._c, _FIRED, values)
        await self._count_unread([
            {"app_id": n.app_id, "user_id": n.user_id, "read_at": n.read_at, "status": n.status,
             "channel_mask": v["b_mask"]} for n, v in zip(items, values, strict=True)])

    async def cancel(self, app_id: str, notification_id: str,
                     at: datetime) -> Notification | None:
        await self._c.execute(update(notifications).where(
            _n.app_id == app_id, _n.id == notification_id, _SCHEDULED,
        ).values(status=NotificationStatus.CANCELED.value))
        return await self.get(app_id, notification_id)


_FIRED = (update(notifications).where(_n.id == bindparam("b_id"), _SCHEDULED)
          .values(status=bindparam("b_status"), channel_mask=bindparam("b_mask")))
