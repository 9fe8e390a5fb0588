"""Conversions between table rows and domain objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ....domain.apps import ApiKey, App, CredentialKind
from ....domain.devices import Device
from ....domain.notifications import Delivery, Notification
from ....domain.users import User


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
        provider_names=list(row.provider_names or []), created_at=from_ms(row.created_at),
        updated_at=from_ms(row.updated_at),
    )


def app_values(app: App) -> dict[str, Any]:
    return {
        "id": app.id, "name": app.name, "routing": app.routing, "defaults": app.defaults,
        "webhook": app.webhook, "providers_secret": app.providers_secret,
        "provider_names": app.provider_names,
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
        updated_at=from_ms(row.updated_at),
    )


def device_from(row: Any) -> Device:
    return Device(
        id=row.id, app_id=row.app_id, user_id=row.user_id, platform=row.platform,
        token=row.token, token_key=row.token_key, provider=row.provider,
        enabled=bool(row.enabled), device_info=row.device_info, app_version=row.app_version,
        created_at=from_ms(row.created_at), last_seen_at=from_ms(row.last_seen_at),
        disabled_reason=row.disabled_reason,
    )


def device_values(d: Device) -> dict[str, Any]:
    return {
        "id": d.id, "app_id": d.app_id, "user_id": d.user_id, "platform": d.platform,
        "token": d.token, "token_key": d.token_key, "provider": d.provider,
        "enabled": d.enabled, "disabled_reason": d.disabled_reason,
        "device_info": d.device_info, "app_version": d.app_version,
        "created_at": to_ms(d.created_at), "last_seen_at": to_ms(d.last_seen_at),
    }


def notification_from(row: Any) -> Notification:
    return Notification(
        id=row.id, app_id=row.app_id, user_id=row.user_id, to=row.recipient,
        to_address=row.to_address, channels=row.channels, title=row.title, body=row.body,
        data=row.data, category=row.category, created_at=from_ms(row.created_at),
        send_at=opt_dt(row.send_at), status=row.status, read_at=opt_dt(row.read_at),
        sender_id=row.sender_id, ttl=row.ttl, priority=row.priority,
    )


def notification_values(n: Notification, mask: int) -> dict[str, Any]:
    return {
        "id": n.id, "app_id": n.app_id, "user_id": n.user_id, "to_address": n.to_address,
        "recipient": n.to, "channels": n.channels, "channel_mask": mask, "title": n.title,
        "body": n.body, "data": n.data, "category": n.category,
        "created_at": to_ms(n.created_at), "send_at": opt_ms(n.send_at), "status": n.status,
        "read_at": opt_ms(n.read_at), "sender_id": n.sender_id, "ttl": n.ttl,
        "priority": n.priority,
    }


def delivery_from(row: Any) -> Delivery:
    return Delivery(
        id=row.id, notification_id=row.notification_id, app_id=row.app_id,
        user_id=row.user_id, channel=row.channel, provider=row.provider, target=row.target,
        status=row.status, attempts=row.attempts, error=row.error,
        provider_message_id=row.provider_message_id, created_at=from_ms(row.created_at),
        updated_at=from_ms(row.updated_at), due_at=opt_dt(row.due_at),
    )


def delivery_values(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id, "notification_id": d.notification_id, "app_id": d.app_id,
        "user_id": d.user_id, "channel": d.channel, "provider": d.provider, "target": d.target,
        "status": d.status, "attempts": d.attempts, "error": d.error,
        "provider_message_id": d.provider_message_id, "created_at": to_ms(d.created_at),
        "updated_at": to_ms(d.updated_at), "due_at": opt_ms(d.due_at), "lease_id": None,
    }
