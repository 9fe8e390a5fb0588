"""Users and devices in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ....domain.devices import Device
from ....domain.errors import StoreConflict
from ....domain.users import AttributeEquals, User
from . import counters, stream
from .rows import device_from, device_values, opt_ms, to_ms, user_from
from .schema import deliveries, devices, notifications, users


def _user_values(user: User) -> dict[str, Any]:
    return {
        "app_id": user.app_id, "id": user.id, "email": user.email, "phone": user.phone,
        "timezone": user.timezone, "locale": user.locale, "attributes": user.attributes,
        "created_at": to_ms(user.created_at) if user.created_at else 0,
        "updated_at": to_ms(user.updated_at) if user.updated_at else 0,
        "email_undeliverable_at": opt_ms(user.email_undeliverable_at),
        "email_undeliverable_reason": user.email_undeliverable_reason,
    }


class SqlUsers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn
        self._pg = conn.dialect.name == "postgresql"

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
            return True
        values.pop("created_at")
        await self._c.execute(update(users).where(
            users.c.app_id == user.app_id, users.c.id == user.id).values(values))
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
        await counters.zero(self._c, app_id, user_id)
        await stream.forget(self._c, app_id, user_id)
        return bool(d.rowcount or n.rowcount or v.rowcount or u.rowcount)

    def _attribute_clause(self, f: AttributeEquals) -> ColumnElement[bool]:
        if self._pg:
            column = type_coerce(users.c.attributes, JSONB)
            return or_(*(column.contains({f.key: v}) for v in f.values))
        path = f'$."{f.key}"'
        extracted = func.json_extract(users.c.attributes, path)
        typed = func.json_type(users.c.attributes, path)
        clauses = []
        for v in f.values:
            if isinstance(v, bool):
                clauses.append(typed == ("true" if v else "false"))
            elif isinstance(v, str):
                clauses.append((typed == "text") & (extracted == v))
            else:
                clauses.append(typed.in_(("integer", "real")) & (extracted == v))
        return or_(*clauses)

    async def mark_email_undeliverable(self, app_id: str, user_id: str, address: str,
                                       reason: str, at: datetime) -> bool:
        result = await self._c.execute(update(users).where(
            users.c.app_id == app_id, users.c.id == user_id, users.c.email == address,
        ).values(email_undeliverable_at=to_ms(at), email_undeliverable_reason=reason[:300]))
        return bool(result.rowcount)

    async def list(self, app_id: str, filters: Sequence[AttributeEquals], limit: int,
                   after: str | None) -> list[User]:
        q = select(users).where(users.c.app_id == app_id).order_by(users.c.id).limit(limit)
        if after is not None:
            q = q.where(users.c.id > after)
        for f in filters:
            q = q.where(self._attribute_clause(f))
        return [user_from(r) for r in await self._c.execute(q)]


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
