"""A user's live stream: the events, their order, and how a connection merges what it replays
from the store with what arrives live, without a gap or a duplicate.

Every change to a user's inbox that a stream reports (a notification in the in-app feed, a read,
a read-all) gets the next number of that user's sequence, in the transaction that makes the
change. The sequence is allocated on the user's counter row, so two transactions for one user
take their numbers in commit order and the numbers have no holes: a connection that has sent
event `n` and receives `n + 2` knows that `n + 1` exists and reads it from the store first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from .notifications import Channel, Notification, NotificationStatus, feed_channels
from .webhooks import iso

CREATED = "notification.created"
READ = "notification.read"
UNREAD_COUNT = "unread_count"
RESET = "stream.reset"  # the client was away longer than the store keeps events: refetch
# Not sent to clients: a hub's word to its subscribers that it may have missed messages (it
# lost its connection), so each reads from the store what it did not get.
RESYNC = "stream.resync"

STORED_TYPES = frozenset({CREATED, READ})

# WebSocket close codes (4000-4999 are the application's own).
CLIENT_GONE = 0  # not a close code: the client went away, there is nobody to tell
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
CLOSE_UNAUTHENTICATED = 4401  # bad, expired or revoked credential
CLOSE_FORBIDDEN = 4403  # the credential may not open this user's stream
CLOSE_GONE = 4404  # the user or the app was deleted (or never existed)
CLOSE_TOO_SLOW = 4408  # the client did not read its events fast enough


@dataclass(frozen=True)
class StreamEvent:
    """One stored change of a user's inbox, with the user's unread counts just after it."""

    app_id: str
    user_id: str
    seq: int
    type: str
    data: dict[str, Any]
    at: datetime
    unread: int = 0  # every channel
    unread_in_app: int = 0  # the in-app feed (the bell)
    # What the hub and the connections share: the event rendered once for every listener.
    wire: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def resync_marker(app_id: str, user_id: str, at: datetime) -> StreamEvent:
    return StreamEvent(app_id, user_id, 0, RESYNC, {}, at)


@dataclass(frozen=True)
class StreamHead:
    """Where a user's stream is now: the last sequence number and the unread counts."""

    seq: int
    unread: int
    unread_in_app: int
    oldest: int  # the oldest sequence number the store still keeps (seq + 1 when none)


@dataclass(frozen=True)
class Kick:
    """Close the matching streams on every node: a key was revoked, a user or app deleted."""

    code: int
    reason: str
    app_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None

    def matches(self, app_id: str, user_id: str, key_id: str | None) -> bool:
        if self.key_id is not None and self.key_id != key_id:
            return False
        if self.app_id is not None and self.app_id != app_id:
            return False
        return self.user_id is None or self.user_id == user_id


class Step(Enum):
    SEND = "send"  # the next event: send it
    SKIP = "skip"  # already sent (replayed, or published twice)
    FILL = "fill"  # events are missing before it: read them from the store first


@dataclass
class Position:
    """The last sequence number a connection has sent."""

    seq: int

    def step(self, seq: int) -> Step:
        if seq <= self.seq:
            return Step.SKIP
        if seq == self.seq + 1:
            return Step.SEND
        return Step.FILL


def parse_after(raw: str | None) -> int | None:
    """A client's resume point (`Last-Event-ID` or `?after=`): the id of an event it saw.

    Returns None for no resume point; raises ValueError for something that is not an id."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ValueError("is not an event id of this stream")
    return int(raw)


def needs_reset(after: int, head: StreamHead) -> bool:
    """The client resumes from before what the store keeps (or from the future): it cannot be
    brought up to date event by event."""
    return after > head.seq or after + 1 < head.oldest


def event_doc(ev: StreamEvent) -> dict[str, Any]:
    """An event as a client receives it, whichever way its stream goes (the WebSocket or SSE of
    a node, or API Gateway's WebSocket API)."""
    return {"id": str(ev.seq), "type": ev.type, "data": ev.data}


def unread_doc(seq: int, in_app: int, total: int) -> dict[str, Any]:
    """The unread counts just after event `seq`, under the same id."""
    return {"id": str(seq), "type": UNREAD_COUNT, "data": {"count": in_app, "total": total}}


RESET_REASON = "the stream no longer holds events from there: reload the inbox"
PONG_DOC: dict[str, Any] = {"type": "pong"}


def reset_doc(seq: int, reason: str = RESET_REASON) -> dict[str, Any]:
    """The stream cannot go on from where the client was: it must refetch (RESET)."""
    return {"id": str(seq), "type": RESET, "data": {"reason": reason}}


def inbox_item(n: Notification) -> dict[str, Any]:
    """The notification as the inbox lists it, and as a `notification.created` event's data."""
    return {"id": n.id, "user_id": n.user_id, "to": n.to, "channels": n.channels,
            "title": n.title, "body": n.body, "data": n.data, "category": n.category,
            "created_at": iso(n.created_at),
            "send_at": iso(n.send_at) if n.send_at else None,
            "status": n.status, "read_at": iso(n.read_at) if n.read_at else None,
            "sender_id": n.sender_id, "ttl": n.ttl, "priority": n.priority}


def is_streamed(n: Notification) -> bool:
    """Only the in-app feed is streamed live (push, SMS and e-mail reach the user elsewhere)."""
    return (n.user_id is not None and n.status != NotificationStatus.SCHEDULED
            and Channel.IN_APP in feed_channels(n))
