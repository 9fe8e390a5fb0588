"""Taking due rows under a lease, as the delivery queue and the event outbox both do: the rows
whose `due_at` has come (oldest first, skipping rows another worker is taking right now on
PostgreSQL), stamped with the lease, and due again when it expires."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, Update, select, update

from .rows import to_ms


def lease_due(table: Table, now: datetime, limit: int, lease_seconds: float, lease_id: str,
              returning: tuple[Any, ...], **values: Any) -> Update:
    c = table.c
    now_ms = to_ms(now)
    due = (select(c.id).where(c.due_at <= now_ms).order_by(c.due_at).limit(limit)
           .with_for_update(skip_locked=True))
    return (update(table)
            .where(c.id.in_(due.scalar_subquery()))
            .values(attempts=c.attempts + 1, lease_id=lease_id, updated_at=now_ms,
                    due_at=to_ms(now + timedelta(seconds=lease_seconds)), **values)
            .returning(*returning))
