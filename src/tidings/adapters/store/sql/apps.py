"""Apps and their keys in SQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.apps import ApiKey, App
from ....domain.errors import StoreConflict
from . import counters, stream
from .rows import app_from, app_values, key_from, opt_ms, to_ms
from .schema import (
    api_keys,
    apps,
    broadcasts,
    deliveries,
    devices,
    idempotency_keys,
    notifications,
    preferences,
    topic_subscriptions,
    topics,
    user_attributes,
    users,
    webhook_events,
)


class SqlApps:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def get(self, app_id: str) -> App | None:
        row = (await self._c.execute(select(apps).where(apps.c.id == app_id))).first()
        return app_from(row) if row else None

    async def list(self, limit: int, after: str | None) -> list[App]:
        q = select(apps).order_by(apps.c.id).limit(limit)
        if after is not None:
            q = q.where(apps.c.id > after)
        return [app_from(r) for r in await self._c.execute(q)]

    async def add(self, app: App) -> None:
        try:
            await self._c.execute(insert(apps).values(app_values(app)))
        except IntegrityError as exc:
            raise StoreConflict(f"app {app.id} exists") from exc

    async def update(self, app: App) -> None:
        values = app_values(app)
        values.pop("created_at")
        await self._c.execute(update(apps).where(apps.c.id == app.id).values(values))

    async def delete(self, app_id: str) -> bool:
        for table in (deliveries, notifications, devices, users, user_attributes, preferences,
                      topic_subscriptions, topics, broadcasts, api_keys, webhook_events):
            await self._c.execute(delete(table).where(table.c.app_id == app_id))
        await self._c.execute(delete(idempotency_keys).where(idempotency_keys.c.scope == app_id))
        await counters.forget(self._c, app_id)
        await stream.forget(self._c, app_id)
        result = await self._c.execute(delete(apps).where(apps.c.id == app_id))
        return bool(result.rowcount)


class SqlKeys:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def add(self, key: ApiKey) -> None:
        await self._c.execute(insert(api_keys).values(
            id=key.id, kind=key.kind.value, app_id=key.app_id, prefix=key.prefix,
            key_hash=key.key_hash, signing_secret=key.signing_secret,
            created_at=to_ms(key.created_at), revoked_at=opt_ms(key.revoked_at),
        ))

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        row = (await self._c.execute(
            select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
        return key_from(row) if row else None

    async def get(self, key_id: str) -> ApiKey | None:
        row = (await self._c.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        return key_from(row) if row else None

    async def active(self, app_id: str | None) -> list[ApiKey]:
        owner = api_keys.c.app_id.is_(None) if app_id is None else api_keys.c.app_id == app_id
        q = select(api_keys).where(owner, api_keys.c.revoked_at.is_(None)).order_by(api_keys.c.id)
        return [key_from(r) for r in await self._c.execute(q)]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        result = await self._c.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=to_ms(at))
        )
        return bool(result.rowcount)
