"""The delivery queue: due rows of `deliveries`, claimed under a lease.

PostgreSQL lets any number of workers claim side by side (`FOR UPDATE SKIP LOCKED`); SQLite has
one writer at a time, so the same statement is simply serialised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.delivery import Claim, OutboundMessage, Outcome
from ....domain.notifications import Delivery, DeliveryStatus, derive_status
from ....domain.receipts import Receipt, next_status
from .leases import lease_due
from .rows import delivery_from, execute_many, opt_ms, to_ms
from .schema import deliveries, devices, notifications

d = deliveries.c

_RECORD = (
    update(deliveries)
    .where(d.id == bindparam("b_id"), d.lease_id == bindparam("b_lease"))
    .values(status=bindparam("b_status"), error=bindparam("b_error"),
            provider_message_id=bindparam("b_mid"), due_at=bindparam("b_due"),
            updated_at=bindparam("b_at"), lease_id=null())
)
_DISABLE = (
    update(devices)
    .where(devices.c.id == bindparam("b_id"))
    .values(enabled=False, disabled_reason=bindparam("b_reason"))
)
_KEEP_REF = (
    update(devices)
    .where(devices.c.id == bindparam("b_id"))
    .values(provider_ref=bindparam("b_ref"))
)
_STATUS = (
    update(notifications)
    .where(notifications.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"))
)


# A notification's status depends on which statuses its deliveries have, not how many: one
# row per (notification, status), not one per delivery (10,000 for a user with 10,000 devices,
# read again for every batch of its fan-out).
_STATUSES = select(d.notification_id, d.status).distinct().where(
    d.notification_id.in_(bindparam("ids", expanding=True)))
_CONTENT = select(notifications.c.id, notifications.c.title, notifications.c.body,
                  notifications.c.data, notifications.c.category, notifications.c.ttl,
                  notifications.c.priority, notifications.c.options).where(
                      notifications.c.id.in_(bindparam("ids", expanding=True)))
_DEVICES = select(devices.c.id, devices.c.token, devices.c.platform, devices.c.enabled,
                  devices.c.provider_ref).where(
    devices.c.id.in_(bindparam("ids", expanding=True)))


_NO_OPTIONS: dict[str, Any] = {}


class SqlQueue:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def claim(self, now: datetime, limit: int, lease_seconds: float,
                    lease_id: str) -> list[Claim]:
        claimed = (await self._c.execute(lease_due(
            deliveries, now, limit, lease_seconds, lease_id,
            (d.id, d.notification_id, d.app_id, d.user_id, d.channel, d.provider, d.target,
             d.attempts), status="sending"))).all()
        if not claimed:
            return []
        # Rows are unpacked by position below: by-name access was most of a claim's cost.
        notes = {row[0]: row[1:] for row in await self._c.execute(
            _CONTENT, {"ids": list({r[1] for r in claimed})})}
        device_ids = [r[6] for r in claimed if r[4] == "push" and r[6]]
        devs = {}
        if device_ids:
            devs = {row[0]: row[1:] for row in await self._c.execute(
                _DEVICES, {"ids": device_ids})}
        claims = []
        for (delivery_id, note_id, app_id, user_id, channel, provider, target,
             attempts) in claimed:
            note = notes.get(note_id)
            platform = device_id = ref = None
            if channel == "push":
                device_id = target
                token, platform, enabled, ref = devs.get(target) or (None, None, False, None)
                target = token if enabled else None
            message = None
            if note is not None and target:
                title, body, data, category, ttl, priority, options = note
                options = options or _NO_OPTIONS
                message = OutboundMessage(
                    delivery_id, note_id, app_id, user_id, channel, provider, target, platform,
                    title, body, data or {}, category, ttl, priority, attempts, device_id,
                    options.get("html"), options.get("collapse_key"),
                    options.get("overrides") or {}, ref)
            claims.append(Claim(delivery_id, note_id, app_id, provider, attempts, lease_id,
                                message))
        return claims

    async def record(self, outcomes: Sequence[Outcome]) -> int:
        if not outcomes:
            return 0
        taken = await execute_many(self._c, _RECORD, [
            {"b_id": o.delivery_id, "b_lease": o.lease_id, "b_status": o.status.value,
             "b_error": o.error, "b_mid": o.provider_message_id, "b_due": opt_ms(o.due_at),
             "b_at": to_ms(o.at)} for o in outcomes])
        gone = [{"b_id": o.disable_device, "b_reason": o.disable_reason}
                for o in outcomes if o.disable_device]
        if gone:
            await self._c.execute(_DISABLE, gone)
        refs = [{"b_id": o.device_ref[0], "b_ref": o.device_ref[1]}
                for o in outcomes if o.device_ref]
        if refs:
            await self._c.execute(_KEEP_REF, refs)
        await self.refresh_statuses({o.notification_id for o in outcomes})
        return taken

    async def refresh_statuses(self, note_ids: set[str]) -> None:
        """Bring the notifications' status in line with their deliveries'."""
        statuses: dict[str, list[str]] = defaultdict(list)
        for note_id, status in await self._c.execute(_STATUSES, {"ids": list(note_ids)}):
            statuses[note_id].append(status)
        await execute_many(self._c, _STATUS, [
            {"b_id": nid, "b_status": derive_status(s).value} for nid, s in statuses.items()])

    async def receipt(self, app_id: str, receipt: Receipt) -> tuple[Delivery, bool] | None:
        row = (await self._c.execute(
            select(deliveries)
            .where(d.provider_message_id == receipt.provider_message_id, d.app_id == app_id,
                   d.provider == receipt.provider)
            .limit(1).with_for_update())).first()
        if row is None:
            return None
        found = delivery_from(row)
        new = next_status(found.status, receipt)
        if new is None:
            return found, False
        # A receipt ends the delivery: it leaves the queue, and its lease (if a worker still
        # holds one) no longer counts, so a late worker record cannot undo it.
        found.status, found.updated_at, found.due_at = new.value, receipt.at, None
        found.error = receipt.error if new == DeliveryStatus.FAILED else None
        await self._c.execute(update(deliveries).where(d.id == found.id).values(
            status=found.status, error=found.error, updated_at=to_ms(receipt.at), due_at=None,
            lease_id=None))
        await self.refresh_statuses({found.notification_id})
        return found, True
