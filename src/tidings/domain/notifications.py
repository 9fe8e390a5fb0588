"""Notifications and their deliveries: the types, and how a status follows from deliveries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


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
    broadcast_id: str | None = None


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


PREFERENCE = "preference"  # the error of a delivery skipped because the user opted out


def feed_channels(n: Notification) -> list[str]:
    """The channels the notification is listed under in the inbox: a channel the user opted
    out of (for this category) is not, so an opted-out in-app notice stays out of the feed."""
    if not n.deliveries:
        return n.channels
    opted_out = {d.channel for d in n.deliveries if d.error == PREFERENCE}
    return [c for c in n.channels if c not in opted_out] if opted_out else n.channels
