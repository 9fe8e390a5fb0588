"""Domain objects to JSON, by hand: this is the hot path of every read, and dicts plus orjson
are several times faster than response-model validation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from starlette.responses import Response

from ...domain.apps import ApiKey, App
from ...domain.broadcasts import Broadcast, Progress
from ...domain.devices import Device
from ...domain.notifications import Delivery, Notification
from ...domain.stream import inbox_item
from ...domain.users import User
from ...domain.webhooks import iso


def ts(value: datetime | None) -> str | None:
    """RFC 3339, UTC, milliseconds, `Z`, or None."""
    return None if value is None else iso(value)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def app(a: App) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "providers": a.provider_names, "routing": a.routing,
            "defaults": a.defaults, "webhook": a.webhook, "created_at": ts(a.created_at),
            "updated_at": ts(a.updated_at)}


def key(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "prefix": k.prefix, "created_at": ts(k.created_at),
            "revoked_at": ts(k.revoked_at)}


def user(u: User) -> dict[str, Any]:
    return {"id": u.id, "email": u.email, "phone": u.phone, "timezone": u.timezone,
            "locale": u.locale, "attributes": u.attributes, "quiet_hours": u.quiet_hours,
            "created_at": ts(u.created_at),
            "updated_at": ts(u.updated_at),
            "email_undeliverable": None if u.email_undeliverable_at is None else {
                "at": ts(u.email_undeliverable_at), "reason": u.email_undeliverable_reason}}


def device(d: Device, effective_provider: str | None = None) -> dict[str, Any]:
    return {"id": d.id, "user_id": d.user_id, "platform": d.platform,
            "provider": d.provider or effective_provider, "enabled": d.enabled,
            "disabled_reason": d.disabled_reason, "device_info": d.device_info,
            "app_version": d.app_version, "created_at": ts(d.created_at),
            "last_seen_at": ts(d.last_seen_at)}


def delivery(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "channel": d.channel, "provider": d.provider, "target": d.target,
            "status": d.status, "attempts": d.attempts, "error": d.error,
            "provider_message_id": d.provider_message_id, "updated_at": ts(d.updated_at)}


def notification(n: Notification, with_deliveries: bool = True) -> dict[str, Any]:
    doc = inbox_item(n)  # as the stream's notification.created shows it
    if with_deliveries:
        doc["deliveries"] = [delivery(d) for d in n.deliveries]
    return doc


def notifications_body(items: list[Notification]) -> bytes:
    return orjson.dumps({"items": [notification(n) for n in items]})


def broadcast(b: Broadcast, progress: Progress) -> dict[str, Any]:
    counts = progress.statuses
    m = b.message
    return {
        "id": b.id, "status": b.status, "to": b.audience, "recipients": b.recipients,
        "expanded": b.expanded, "scheduled": counts.get("scheduled", 0),
        "queued": counts.get("queued", 0),
        "sent": counts.get("sent", 0) + counts.get("partially_failed", 0),
        "failed": counts.get("failed", 0), "canceled": counts.get("canceled", 0),
        "statuses": counts, "send_at": ts(b.send_at), "local_time": b.local_time,
        "title": m.get("title"), "body": m.get("body"), "category": m.get("category"),
        "channels": m.get("channels", []), "created_at": ts(b.created_at),
        "updated_at": ts(b.updated_at),
    }
