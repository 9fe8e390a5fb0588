"""From a send's or broadcast's body to the service's Message and time to send, with the app's
defaults filling what the body leaves out."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from ...domain.notifications import DEFAULT_CHANNELS, Message
from ...domain.schedule import check_send_at, parse_local_time
from .schemas import LocalTime, MessageFields


def message_of(body: MessageFields, defaults: dict[str, Any],
               fallback_channels: tuple[str, ...] | None = None) -> Message:
    channels: tuple[str, ...]
    if body.channels is not None:
        channels = tuple(str(c) for c in body.channels)
    elif fallback_channels is not None:
        channels = fallback_channels
    else:
        channels = tuple(defaults.get("channels") or DEFAULT_CHANNELS)
    return Message(
        channels=channels, title=body.title, body=body.body,
        data=body.data, category=body.category,
        ttl=body.ttl if body.ttl is not None else defaults.get("ttl"),
        priority=body.priority or defaults.get("priority") or "normal",
        sender_id=body.sender_id, html=body.html, collapse_key=body.collapse_key,
        overrides=body.overrides.model_dump(exclude_none=True) if body.overrides else None)


def when_of(body: MessageFields, now: datetime) -> datetime | time | None:
    """None: now. An instant: checked (not over a minute past, not naive). A local time."""
    if isinstance(body.send_at, LocalTime):
        return parse_local_time(body.send_at.local_time, "send_at.local_time")
    if body.send_at is not None:
        return check_send_at(body.send_at, now, "send_at")
    return None
