"""Idempotency records in SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.errors import IdempotencyRace
from ....domain.idempotency import IdempotencyRecord
from .rows import from_ms, to_ms
from .schema import idempotency_keys as t


class SqlIdempotency:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def get(self, scope: str, key: str) -> IdempotencyRecord | None:
        row = (await self._c.execute(
            select(t).where(t.c.scope == scope, t.c.key == key))).first()
        if row is None:
            return None
        return IdempotencyRecord(row.scope, row.key, row.fingerprint, row.status_code,
                                 bytes(row.body), from_ms(row.created_at), from_ms(row.expires_at))

    async def put(self, record: IdempotencyRecord) -> None:
        # An expired record of the same key is replaced, not a conflict.
        await self._c.execute(delete(t).where(
            t.c.scope == record.scope, t.c.key == record.key,
            t.c.expires_at <= to_ms(record.created_at)))
        try:
            await self._c.execute(insert(t).values(
                scope=record.scope, key=record.key, fingerprint=record.fingerprint,
                status_code=record.status_code, body=record.body,
                created_at=to_ms(record.created_at), expires_at=to_ms(record.expires_at)))
        except IntegrityError as exc:
            raise IdempotencyRace("idempotency key taken") from exc

    async def purge(self, now: datetime) -> int:
        result = await self._c.execute(delete(t).where(t.c.expires_at <= to_ms(now)))
        return int(result.rowcount)
