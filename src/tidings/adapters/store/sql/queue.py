"""The delivery queue: due rows of `deliveries`, claimed under a lease.

PostgreSQL lets any number of workers claim side by side (`FOR UPDATE SKIP LOCKED`); SQLite has
one writer at a time, so the same statement is simply serialised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.delivery import Claim, OutboundMessage, Outcome
from ....domain.notifications import derive_status
from .rows import opt_ms, to_ms
from .schema import deliveries, devices, notifications

d = deliveries.c

_RECORD = (
    update(deliveries)
    .where(d.id == bindparam("b_id"), d.lease_id == bindparam("b_lease"))
    .values(status=bindparam("b_status"), error=bindparam("b_error"),
            provider_message_id=bindparam("b_mid"), due_at=bindparam("b_due"),
            updated_at=bindparam("b_at"), lease_id=None)
)
_DISABLE = (
    update(devices)
    .where(devices.c.id == bindparam("b_id"))
    .values(enabled=False, disabled_reason=bindparam("b_reason"))
)
_STATUS = (
    update(notifications)
    .where(notifications.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"))
)


class SqlQueue:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[Claim]:
        now_ms = to_ms(now)
        due = (select(d.id).where(d.due_at <= now_ms).order_by(d.due_at).limit(limit)
               .with_for_update(skip_locked=True))
        claimed = (await self._c.execute(
            update(deliveries)
            .where(d.id.in_(due.scalar_subquery()))
            .values(status="sending", attempts=d.attempts + 1, lease_id=lease_id,
                    due_at=to_ms(now + timedelta(seconds=lease_seconds)), updated_at=now_ms)
            .returning(d.id, d.notification_id, d.app_id, d.user_id, d.channel, d.provider,
                       d.target, d.attempts)
        )).all()
        if not claimed:
            return []
        note_ids = list({r.notification_id for r in claimed})
        notes = {r.id: r for r in await self._c.execute(
            select(notifications.c.id, notifications.c.title, notifications.c.body,
                   notifications.c.data, notifications.c.category, notifications.c.ttl,
                   notifications.c.priority).where(notifications.c.id.in_(note_ids)))}
        device_ids = [r.target for r in claimed if r.channel == "push" and r.target]
        devs = {}
        if device_ids:
            devs = {r.id: r for r in await self._c.execute(
                select(devices.c.id, devices.c.token, devices.c.platform, devices.c.enabled)
                .where(devices.c.id.in_(device_ids)))}
        claims = []
        for r in claimed:
            note = notes.get(r.notification_id)
            target, platform, device_id = r.target, None, None
            if r.channel == "push":
                dev = devs.get(r.target)
                device_id = r.target
                target = dev.token if dev is not None and dev.enabled else None
                platform = dev.platform if dev is not None else None
            message = None
            if note is not None and target:
                message = OutboundMessage(
                    delivery_id=r.id, notification_id=r.notification_id, app_id=r.app_id,
                    user_id=r.user_id, channel=r.channel, provider=r.provider, target=target,
                    platform=platform, title=note.title, body=note.body, data=note.data or {},
                    category=note.category, ttl=note.ttl, priority=note.priority,
                    attempt=r.attempts, device_id=device_id,
                )
            claims.append(Claim(r.id, r.notification_id, r.app_id, r.provider, r.attempts,
                                lease_id, message))
        return claims

    async def record(self, outcomes: Sequence[Outcome]) -> int:
        if not outcomes:
            return 0
        result = await self._c.execute(_RECORD, [
            {"b_id": o.delivery_id, "b_lease": o.lease_id, "b_status": o.status.value,
             "b_error": o.error, "b_mid": o.provider_message_id, "b_due": opt_ms(o.due_at),
             "b_at": to_ms(o.at)} for o in outcomes])
        taken = int(result.rowcount) if result.rowcount is not None else len(outcomes)
        gone = [{"b_id": o.disable_device, "b_reason": o.disable_reason}
                for o in outcomes if o.disable_device]
        if gone:
            await self._c.execute(_DISABLE, gone)
        note_ids = list({o.notification_id for o in outcomes})
        statuses: dict[str, list[str]] = defaultdict(list)
        for row in await self._c.execute(
                select(d.notification_id, d.status).where(d.notification_id.in_(note_ids))):
            statuses[row.notification_id].append(row.status)
        await self._c.execute(_STATUS, [
            {"b_id": nid, "b_status": derive_status(s).value} for nid, s in statuses.items()])
        return taken
