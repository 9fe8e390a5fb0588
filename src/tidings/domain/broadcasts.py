"""Broadcasts: one send to a topic, a segment or every user, expanded in batches into one
notification per recipient."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .notifications import Message


class BroadcastStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its send_at
    QUEUED = "queued"  # accepted; a worker will expand it
    EXPANDING = "expanding"
    COMPLETED = "completed"  # every recipient has its notification
    CANCELED = "canceled"
    FAILED = "failed"


OPEN = frozenset({BroadcastStatus.SCHEDULED, BroadcastStatus.QUEUED, BroadcastStatus.EXPANDING})


@dataclass
class Broadcast:
    id: str
    app_id: str
    audience: dict[str, Any]  # {"topic": key} | {"segment": filter} | {"all": True}
    message: dict[str, Any]  # the Message's fields
    send_at: datetime | None
    local_time: str | None
    status: str
    cursor: str | None
    recipients: int | None
    expanded: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None


@dataclass(frozen=True)
class Progress:
    """The broadcast's notifications by status."""

    statuses: dict[str, int] = field(default_factory=dict)


def message_doc(message: Message) -> dict[str, Any]:
    """The message as stored with the broadcast, to plan each recipient's notification from."""
    doc = asdict(message)
    doc["channels"] = list(message.channels)
    return {k: v for k, v in doc.items() if v is not None}


def message_from(doc: dict[str, Any]) -> Message:
    fields = dict(doc)
    fields["channels"] = tuple(fields.get("channels") or ())
    return Message(**fields)


def audience_kind(audience: dict[str, Any]) -> str:
    """"topic", "segment" or "all"."""
    for kind in ("topic", "segment", "all"):
        if kind in audience:
            return kind
    raise ValueError(f"not a broadcast audience: {sorted(audience)}")
