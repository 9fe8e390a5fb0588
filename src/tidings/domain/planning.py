"""How a send fans out: one notification per recipient, one delivery per target, shaped by what
the recipient opted out of and by quiet hours. A scheduled notification is planned twice: as a
placeholder when accepted, and for real when its time comes (devices and preferences as they
are then)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .apps import App, route
from .devices import Device
from .ids import new_id
from .notifications import (
    PREFERENCE,
    Channel,
    Delivery,
    DeliveryStatus,
    Message,
    Notification,
    NotificationStatus,
    derive_status,
)
from .preferences import Preferences, allows
from .targeting import NO_RULES, AppRules


@dataclass(frozen=True)
class Recipient:
    """One addressee: a user of the app (with what we know of them) or a raw address."""

    user_id: str | None = None
    phone: str | None = None
    email: str | None = None
    devices: tuple[Device, ...] = ()
    email_undeliverable: str | None = None  # why the address must not be mailed (a bounce)
    preferences: Preferences | None = None
    quiet_hours: Mapping[str, Any] | None = None  # the user's own window, if any
    timezone: str | None = None

    @property
    def to(self) -> dict[str, str]:
        if self.user_id is not None:
            return {"user_id": self.user_id}
        if self.phone is not None:
            return {"phone": self.phone}
        return {"email": self.email or ""}

    @property
    def address(self) -> str | None:
        return None if self.user_id is not None else (self.phone or self.email)


def plan_notification(app: App, recipient: Recipient, message: Message, now: datetime,
                      rules: AppRules = NO_RULES, *, send_at: datetime | None = None,
                      broadcast_id: str | None = None) -> Notification:
    """The notification for one recipient. With a `send_at` still ahead it is `scheduled` and
    has no deliveries yet; its id carries that time, so it takes its place in the inbox when it
    appears there (ids order the inbox)."""
    scheduled = send_at is not None and send_at > now
    at = send_at if scheduled and send_at is not None else now
    n = Notification(
        id=new_id(int(at.timestamp() * 1000)), app_id=app.id, user_id=recipient.user_id,
        to=recipient.to, to_address=recipient.address, channels=list(message.channels),
        title=message.title, body=message.body, data=dict(message.data),
        category=message.category, created_at=now, send_at=send_at if scheduled else None,
        status=NotificationStatus.SCHEDULED, read_at=None, sender_id=message.sender_id,
        ttl=message.ttl, priority=message.priority, options=message.options,
        broadcast_id=broadcast_id,
    )
    if not scheduled:
        fire(n, app, recipient, rules, now)
    return n


def fire(n: Notification, app: App, recipient: Recipient, rules: AppRules,
         now: datetime) -> None:
    """Give the notification one delivery per target (the outbox rows) and its status."""
    # Ids carry `now`, so the inbox's time bounds (since/until) can be id bounds on one index.
    now_ms = int(now.timestamp() * 1000)
    deliveries: list[Delivery] = []
    held: datetime | None = None
    if n.priority != "high" and rules.held and n.channels:
        held = rules.quiet_until(now, recipient.quiet_hours, recipient.timezone)

    def add(channel: str, provider: str, target: str | None, status: str, error: str | None) -> None:
        due = None
        if status == DeliveryStatus.PENDING:
            due = held if held is not None and channel in rules.held else now
            if due != now and n.ttl is not None and due > now + timedelta(seconds=n.ttl):
                # Held past its time to live: a one-time code is useless in the morning.
                status, error, due = DeliveryStatus.SKIPPED, "its ttl ends during quiet hours", None
        deliveries.append(Delivery(
            id=new_id(now_ms), notification_id=n.id, app_id=app.id, user_id=recipient.user_id,
            channel=channel, provider=provider, target=target, status=status, attempts=0,
            error=error, provider_message_id=None, created_at=now, updated_at=now, due_at=due))

    for channel in n.channels:
        if recipient.user_id is not None and not allows(
                recipient.preferences, n.category, channel, rules.mandatory):
            add(channel, route(app, channel), None, DeliveryStatus.SKIPPED, PREFERENCE)
        elif channel == Channel.PUSH:
            enabled = [d for d in recipient.devices if d.enabled]
            if not enabled:
                add(channel, route(app, channel), None, DeliveryStatus.SKIPPED, "no enabled device")
            for device in enabled:
                provider = device.provider or route(app, channel, device.platform)
                add(channel, provider, device.id, DeliveryStatus.PENDING, None)
        elif channel == Channel.IN_APP:
            # Stored is delivered: the inbox row is written in the same transaction.
            add(channel, route(app, channel), recipient.user_id, DeliveryStatus.SENT, None)
        elif channel == Channel.SMS:
            if recipient.phone:
                add(channel, route(app, channel), recipient.phone, DeliveryStatus.PENDING, None)
            else:
                add(channel, route(app, channel), None, DeliveryStatus.SKIPPED, "no phone number")
        elif channel == Channel.EMAIL:
            if recipient.email and recipient.email_undeliverable:
                add(channel, route(app, channel), recipient.email, DeliveryStatus.SKIPPED,
                    f"email undeliverable: {recipient.email_undeliverable}")
            elif recipient.email:
                add(channel, route(app, channel), recipient.email, DeliveryStatus.PENDING, None)
            else:
                add(channel, route(app, channel), None, DeliveryStatus.SKIPPED, "no email address")
    n.deliveries = deliveries
    n.status = derive_status(deliveries)
