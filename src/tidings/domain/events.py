"""Outgoing app events (delivery and read events sent to an app's webhook): the envelope and the
retry schedule of the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

EVENT_TYPES = ("delivery.sent", "delivery.delivered", "delivery.failed", "delivery.skipped",
               "notification.read", "notification.read_all")

# After the first attempt fails: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (the schedule the
# Standard Webhooks guidance suggests); then the event is given up.
SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


@dataclass(frozen=True)
class AppEvent:
    id: str
    app_id: str
    type: str
    payload: dict[str, Any]  # the envelope: {"type", "timestamp", "data"}
    created_at: datetime
    attempts: int = 0
    lease_id: str | None = None


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    lease_id: str
    status: str  # sent | pending | failed
    at: datetime
    due_at: datetime | None
    error: str | None


def wants(webhook: dict[str, Any] | None, event_type: str) -> bool:
    """Whether an app's webhook settings ask for this event type."""
    if not webhook or not webhook.get("url"):
        return False
    events = webhook.get("events")
    return events is None or event_type in events


def after_attempt(event: AppEvent, lease_id: str, ok: bool, error: str | None, now: datetime,
                  retry_after: float | None = None) -> EventOutcome:
    """Sent, due again later on the schedule (a receiver's Retry-After wins when longer), or
    given up once the schedule is spent."""
    if ok:
        return EventOutcome(event.id, lease_id, "sent", now, None, None)
    if event.attempts > len(SCHEDULE):
        return EventOutcome(event.id, lease_id, "failed", now, None,
                            f"gave up after {event.attempts} attempts: {error}")
    delay = float(SCHEDULE[event.attempts - 1])
    if retry_after is not None:
        delay = max(delay, min(retry_after, 86_400.0))
    return EventOutcome(event.id, lease_id, "pending", now, now + timedelta(seconds=delay), error)
