"""Conversions between table rows and domain objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ....domain.apps import ApiKey, App, CredentialKind
from ....domain.devices import Device
from ....domain.notifications import Delivery, Notification
from ....domain.users import User

_UTC_FROM = datetime.fromtimestamp


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def opt_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def opt_dt(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def app_from(row: Any) -> App:
    return App(
        id=row.id, name=row.name, routing=row.routing or {}, defaults=row.defaults or {},
        webhook=row.webhook, providers_secret=row.providers_secret,
        provider_names=list(row.provider_names or []), webhook_secret=row.webhook_secret,
        created_at=from_ms(row.created_at),
        updated_at=from_ms(row.updated_at),
    )


def app_values(app: App) -> dict[str, Any]:
    return {
        "id": app.id, "name": app.name, "routing": app.routing, "defaults": app.defaults,
        "webhook": app.webhook, "providers_secret": app.providers_secret,
        "provider_names": app.provider_names, "webhook_secret": app.webhook_secret,
        "created_at": to_ms(app.created_at) if app.created_at else 0,
        "updated_at": to_ms(app.updated_at) if app.updated_at else 0,
    }


def key_from(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id, kind=CredentialKind(row.kind), app_id=row.app_id, prefix=row.prefix,
        key_hash=row.key_hash, signing_secret=row.signing_secret,
        created_at=from_ms(row.created_at), revoked_at=opt_dt(row.revoked_at),
    )


def user_from(row: Any) -> User:
    return User(
        app_id=row.app_id, id=row.id, email=row.email, phone=row.phone, timezone=row.timezone,
        locale=row.locale, attributes=row.attributes or {}, created_at=from_ms(row.created_at),
        updated_at=from_ms(row.updated_at), email_undeliverable_at=opt_dt(row.email_undeliverable_at),
        email_undeliverable_reason=row.email_undeliverable_reason,
        quiet_hours=row.quiet_hours,
    )


def device_from(row: Any) -> Device:
    return Device(
        id=row.id, app_id=row.app_id, user_id=row.user_id, platform=row.platform,
        token=row.token, token_key=row.token_key, provider=row.provider,
        enabled=bool(row.enabled), device_info=row.device_info, app_version=row.app_version,
        created_at=from_ms(row.created_at), last_seen_at=from_ms(row.last_seen_at),
        disabled_reason=row.disabled_reason, provider_ref=row.provider_ref,
    )


def device_values(d: Device) -> dict[str, Any]:
    return {
        "id": d.id, "app_id": d.app_id, "user_id": d.user_id, "platform": d.platform,
        "token": d.token, "token_key": d.token_key, "provider": d.provider,
        "enabled": d.enabled, "disabled_reason": d.disabled_reason,
        "device_info": d.device_info, "app_version": d.app_version,
        "created_at": to_ms(d.created_at), "last_seen_at": to_ms(d.last_seen_at),
        "provider_ref": d.provider_ref,
    }


def notification_from(row: Any) -> Notification:
    """From a row of all the table's columns, in table order (unpacked by position: reading
    eighteen attributes by name was the inbox page's largest cost)."""
    (id_, app_id, user_id, to_address, recipient, channels, _mask, title, body, data, category,
     created_at, send_at, status, read_at, sender_id, ttl, priority, options, broadcast_id) = row
    return Notification(
        id_, app_id, user_id, recipient, to_address, channels, title, body, data, category,
        _UTC_FROM(created_at / 1000, UTC), None if send_at is None else _UTC_FROM(send_at / 1000, UTC),
        status, None if read_at is None else _UTC_FROM(read_at / 1000, UTC), sender_id, ttl,
        priority, [], options, broadcast_id,
    )


def notification_values(n: Notification, mask: int) -> dict[str, Any]:
    return {
        "id": n.id, "app_id": n.app_id, "user_id": n.user_id, "to_address": n.to_address,
        "recipient": n.to, "channels": n.channels, "channel_mask": mask, "title": n.title,
        "body": n.body, "data": n.data, "category": n.category,
        "created_at": to_ms(n.created_at), "send_at": opt_ms(n.send_at), "status": n.status,
        "read_at": opt_ms(n.read_at), "sender_id": n.sender_id, "ttl": n.ttl,
        "priority": n.priority, "options": n.options, "broadcast_id": n.broadcast_id,
    }


def delivery_from(row: Any) -> Delivery:
    """From a row of all the table's columns, in table order."""
    (id_, notification_id, app_id, user_id, channel, provider, target, status, attempts, error,
     message_id, created_at, updated_at, due_at, _lease) = row
    return Delivery(
        id_, notification_id, app_id, user_id, channel, provider, target, status, attempts,
        error, message_id, _UTC_FROM(created_at / 1000, UTC), _UTC_FROM(updated_at / 1000, UTC),
        None if due_at is None else _UTC_FROM(due_at / 1000, UTC),
    )


def delivery_values(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "notification_id": d.notification_id, "app_id": d.app_id,
        "user_id": d.user_id, "channel": d.channel, "provider": d.provider, "target": d.target,
        "status": d.status, "attempts": d.attempts, "error": d.error,
        "provider_message_id": d.provider_message_id, "created_at": to_ms(d.created_at),
        "updated_at": to_ms(d.updated_at), "due_at": opt_ms(d.due_at), "lease_id": None,
    }


async def execute_many(conn: Any, statement: Any, rows: list[dict[str, Any]]) -> int:
    """executemany; straight on the driver where the connection offers it (SQLite). Returns
    the rows touched where the driver says, else how many were given."""
    plain = getattr(conn, "executemany_plain", None)
    if plain is not None:
        return int(await plain(statement, rows))
    result = await conn.execute(statement, rows)
    return int(result.rowcount) if result.rowcount is not None and result.rowcount >= 0 \
        else len(rows)


async def forget_rows(conn: Any, table: Any, app_id: str, user_id: str | None = None) -> None:
    """Delete the app's rows of a table keyed by (app_id, user_id), or only the user's."""
    q = table.delete().where(table.c.app_id == app_id)
    if user_id is not None:
        q = q.where(table.c.user_id == user_id)
    await conn.execute(q)
