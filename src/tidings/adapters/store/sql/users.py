"""Users and devices in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.devices import Device
from ....domain.errors import StoreConflict
from ....domain.segments import Segment, attribute_rows
from ....domain.users import User
from . import counters, preferences, stream, topics
from .rows import device_from, device_values, opt_ms, to_ms, user_from
from .schema import deliveries, devices, notifications, users
from .segments import (
    count_users,
    forget_attributes,
    forget_user,
    page_clause,
    write_attributes,
)

__all__ = ["SqlDevices", "SqlUsers", "forget_attributes"]


def _user_values(user: User) -> dict[str, Any]:
    return {
        "app_id": user.app_id, "id": user.id, "email": user.email, "phone": user.phone,
        "timezone": user.timezone, "locale": user.locale, "attributes": user.attributes,
        "created_at": to_ms(user.created_at) if user.created_at else 0,
        "updated_at": to_ms(user.updated_at) if user.updated_at else 0,
        "email_undeliverable_at": opt_ms(user.email_undeliverable_at),
        "email_undeliverable_reason": user.email_undeliverable_reason,
        "quiet_hours": user.quiet_hours,
    }


class SqlUsers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def get(self, app_id: str, user_id: str) -> User | None:
        row = (await self._c.execute(
            select(users).where(users.c.app_id == app_id, users.c.id == user_id))).first()
        return user_from(row) if row else None

    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, User]:
        if not user_ids:
            return {}
        rows = await self._c.execute(
            select(users).where(users.c.app_id == app_id, users.c.id.in_(list(user_ids))))
        return {r.id: user_from(r) for r in rows}

    async def upsert(self, user: User) -> bool:
        values = _user_values(user)
        existing = await self.get(user.app_id, user.id)
        if existing is None:
            try:
                await self._c.execute(insert(users).values(values))
            except IntegrityError as exc:
                raise StoreConflict("user was created concurrently") from exc
            await write_attributes(self._c, user.app_id, user.id, user.attributes)
            return True
        values.pop("created_at")
        await self._c.execute(update(users).where(
            users.c.app_id == user.app_id, users.c.id == user.id).values(values))
        # Compared as index rows: 1 == True in Python, but they are not the same attribute.
        if set(attribute_rows(existing.attributes)) != set(attribute_rows(user.attributes)):
            await write_attributes(self._c, user.app_id, user.id, user.attributes)
        return False

    async def ensure(self, app_id: str, user_id: str, at: datetime) -> None:
        exists = (await self._c.execute(select(users.c.id).where(
            users.c.app_id == app_id, users.c.id == user_id))).first()
        if exists is None:
            ms = to_ms(at)
            try:
                await self._c.execute(insert(users).values(
                    app_id=app_id, id=user_id, attributes={}, created_at=ms, updated_at=ms))
            except IntegrityError as exc:
                raise StoreConflict("user was created concurrently") from exc
            # No attributes: nothing to index, and nothing left over from an earlier namesake.
            await forget_user(self._c, app_id, user_id)

    async def delete(self, app_id: str, user_id: str) -> bool:
        inbox = select(notifications.c.id).where(
            notifications.c.app_id == app_id, notifications.c.user_id == user_id)
        d = await self._c.execute(delete(deliveries).where(deliveries.c.notification_id.in_(inbox)))
        n = await self._c.execute(delete(notifications).where(
            notifications.c.app_id == app_id, notifications.c.user_id == user_id))
        v = await self._c.execute(delete(devices).where(
            devices.c.app_id == app_id, devices.c.user_id == user_id))
        u = await self._c.execute(delete(users).where(
            users.c.app_id == app_id, users.c.id == user_id))
        await forget_user(self._c, app_id, user_id)
        await topics.forget(self._c, app_id, user_id)
        await preferences.forget(self._c, app_id, user_id)
        await counters.zero(self._c, app_id, user_id)
        await stream.forget(self._c, app_id, user_id)
        return bool(d.rowcount or n.rowcount or v.rowcount or u.rowcount)

    async def mark_email_undeliverable(self, app_id: str, user_id: str, address: str,
                                       reason: str, at: datetime) -> bool:
        result = await self._c.execute(update(users).where(
            users.c.app_id == app_id, users.c.id == user_id, users.c.email == address,
        ).values(email_undeliverable_at=to_ms(at), email_undeliverable_reason=reason[:300]))
        return bool(result.rowcount)

    async def list(self, app_id: str, segment: Segment | None, limit: int,
                   after: str | None) -> list[User]:
        # The ids first (an index, and the probes), then only the rows of the page.
        ids = select(users.c.id).where(users.c.app_id == app_id).order_by(users.c.id).limit(limit)
        if after is not None:
            ids = ids.where(users.c.id > after)
        if segment is not None:
            ids = ids.where(await page_clause(self._c, app_id, segment, after, limit))
        q = select(users).where(users.c.app_id == app_id, users.c.id.in_(ids)).order_by(users.c.id)
        return [user_from(r) for r in await self._c.execute(q)]

    async def count(self, app_id: str, segment: Segment | None) -> int:
        return await count_users(self._c, app_id, segment)


_DEVICES_OF_USER = (select(devices)
                    .where(devices.c.app_id == bindparam("app"), devices.c.user_id == bindparam("user"))
                    .order_by(devices.c.id))
_DEVICES_OF_USERS = (select(devices)
                     .where(devices.c.app_id == bindparam("app"),
                            devices.c.user_id.in_(bindparam("users", expanding=True)))
                     .order_by(devices.c.id))


class SqlDevices:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn

    async def get(self, app_id: str, device_id: str) -> Device | None:
        row = (await self._c.execute(select(devices).where(
            devices.c.app_id == app_id, devices.c.id == device_id))).first()
        return device_from(row) if row else None

    async def by_token(self, app_id: str, token_key: str) -> Device | None:
        row = (await self._c.execute(select(devices).where(
            devices.c.app_id == app_id, devices.c.token_key == token_key))).first()
        return device_from(row) if row else None

    async def for_user(self, app_id: str, user_id: str) -> list[Device]:
        rows = await self._c.execute(select(devices).where(
            devices.c.app_id == app_id, devices.c.user_id == user_id).order_by(devices.c.id))
        return [device_from(r) for r in rows]

    async def for_users(self, app_id: str, user_ids: Sequence[str]) -> dict[str, list[Device]]:
        found: dict[str, list[Device]] = {u: [] for u in user_ids}
        if not user_ids:
            return found
        if len(user_ids) == 1:  # the common send: one statement built once, no IN expansion
            rows = await self._c.execute(_DEVICES_OF_USER, {"app": app_id, "user": user_ids[0]})
        else:
            rows = await self._c.execute(_DEVICES_OF_USERS, {"app": app_id, "users": list(user_ids)})
        for r in rows:
            found[r.user_id].append(device_from(r))
        return found

    async def add(self, device: Device) -> None:
        try:
            await self._c.execute(insert(devices).values(device_values(device)))
        except IntegrityError as exc:
            raise StoreConflict("token is already paired") from exc

    async def update(self, device: Device) -> None:
        values = device_values(device)
        values.pop("id")
        try:
            await self._c.execute(update(devices).where(devices.c.id == device.id).values(values))
        except IntegrityError as exc:
            raise StoreConflict("token is already paired") from exc

    async def delete(self, app_id: str, device_id: str) -> bool:
        result = await self._c.execute(delete(devices).where(
            devices.c.app_id == app_id, devices.c.id == device_id))
        return bool(result.rowcount)
