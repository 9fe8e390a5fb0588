"""Notifications, their deliveries, and how a send fans out into deliveries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .apps import App, route
from .devices import Device
from .ids import new_id


class Channel(StrEnum):
    PUSH = "push"
    IN_APP = "in_app"
    SMS = "sms"
    EMAIL = "email"


CHANNEL_BITS = {Channel.PUSH: 1, Channel.IN_APP: 2, Channel.SMS: 4, Channel.EMAIL: 8}
DEFAULT_CHANNELS = (Channel.PUSH, Channel.IN_APP)


def channel_mask(channels: Iterable[str]) -> int:
    mask = 0
    for c in channels:
        mask |= CHANNEL_BITS[Channel(c)]
    return mask


class NotificationStatus(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENT = "sent"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELED = "canceled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


OPEN_STATUSES = frozenset({DeliveryStatus.PENDING, DeliveryStatus.SENDING})
DONE_OK = frozenset({DeliveryStatus.SENT, DeliveryStatus.DELIVERED})


@dataclass
class Delivery:
    id: str
    notification_id: str
    app_id: str
    user_id: str | None
    channel: str
    provider: str
    target: str | None
    status: str
    attempts: int
    error: str | None
    provider_message_id: str | None
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None  # when a worker may claim it; None once it is final


@dataclass
class Notification:
    id: str
    app_id: str
    user_id: str | None
    to: dict[str, str]
    to_address: str | None
    channels: list[str]
    title: str | None
    body: str | None
    data: dict[str, Any]
    category: str | None
    created_at: datetime
    send_at: datetime | None
    status: str
    read_at: datetime | None
    sender_id: str | None
    ttl: int | None
    priority: str
    deliveries: list[Delivery] = field(default_factory=list)
    # What only providers read: {"html", "collapse_key", "overrides"} (keys present when set).
    options: dict[str, Any] | None = None


@dataclass(frozen=True)
class Message:
    """What is sent, the same for every recipient of one request."""

    channels: tuple[str, ...]
    title: str | None = None
    body: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    category: str | None = None
    ttl: int | None = None
    priority: str = "normal"
    sender_id: str | None = None
    html: str | None = None
    collapse_key: str | None = None
    overrides: dict[str, Any] | None = None

    @property
    def options(self) -> dict[str, Any] | None:
        found = {k: v for k, v in (("html", self.html), ("collapse_key", self.collapse_key),
                                   ("overrides", self.overrides)) if v}
        return found or None


@dataclass(frozen=True)
class Recipient:
    """One addressee: a user of the app (with what we know of them) or a raw address."""

    user_id: str | None = None
    phone: str | None = None
    email: str | None = None
    devices: tuple[Device, ...] = ()
    email_undeliverable: str | None = None  # why the address must not be mailed (a bounce)

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


def derive_status(deliveries: Sequence[Delivery] | Sequence[str]) -> NotificationStatus:
    """A notification's status follows from its deliveries.

    Skipped deliveries (nothing to send to) neither help nor hurt; a notification none of whose
    deliveries could even be attempted has failed, since nothing reached the recipient.
    """
    ok = failed = 0
    for d in deliveries:
        status = d if isinstance(d, str) else d.status
        if status in OPEN_STATUSES:
            return NotificationStatus.QUEUED
        if status in DONE_OK:
            ok += 1
        elif status == DeliveryStatus.FAILED:
            failed += 1
    if ok and not failed:
        return NotificationStatus.SENT
    if ok and failed:
        return NotificationStatus.PARTIALLY_FAILED
    return NotificationStatus.FAILED


def plan_notification(app: App, recipient: Recipient, message: Message, now: datetime) -> Notification:
    """One notification for the recipient with one delivery per target (the outbox rows)."""
    # Ids carry `now`, so the inbox's time bounds (since/until) can be id bounds on one index.
    now_ms = int(now.timestamp() * 1000)
    notification_id = new_id(now_ms)
    deliveries: list[Delivery] = []

    def add(channel: str, provider: str, target: str | None, status: str, error: str | None) -> None:
        deliveries.append(
            Delivery(
                id=new_id(now_ms), notification_id=notification_id, app_id=app.id,
                user_id=recipient.user_id, channel=channel, provider=provider, target=target,
                status=status, attempts=0, error=error, provider_message_id=None,
                created_at=now, updated_at=now,
                due_at=now if status == DeliveryStatus.PENDING else None,
            )
        )

    for channel in message.channels:
        if channel == Channel.PUSH:
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
    return Notification(
        id=notification_id, app_id=app.id, user_id=recipient.user_id, to=recipient.to,
        to_address=recipient.address, channels=list(message.channels), title=message.title,
        body=message.body, data=dict(message.data), category=message.category, created_at=now,
        send_at=None, status=derive_status(deliveries), read_at=None,
        sender_id=message.sender_id, ttl=message.ttl, priority=message.priority,
        deliveries=deliveries, options=message.options,
    )
