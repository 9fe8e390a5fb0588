"""Topics: named audiences an app's users subscribe to (or are subscribed to by the app)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .errors import ValidationFailed
from .pagination import decode_cursor, encode_cursor

TOPIC_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_TOPIC_NAME = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_NOT_OURS = "is not a cursor this service gave out"


def check_topic_key(key: str, field: str = "topic") -> str:
    if not TOPIC_KEY.fullmatch(key):
        raise ValidationFailed.on(field, "a topic key is 1-128 characters of letters, digits "
                                  "and _ . : - and starts with a letter or digit")
    return key


def check_topic_name(name: str | None) -> str | None:
    if name is not None and not 1 <= len(name) <= MAX_TOPIC_NAME:
        raise ValidationFailed.on("name", f"must be 1-{MAX_TOPIC_NAME} characters")
    return name


@dataclass
class Topic:
    app_id: str
    key: str
    name: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Subscription:
    app_id: str
    topic: str
    user_id: str
    created_at: datetime


def epoch_ms(when: datetime) -> int:
    """Whole milliseconds since the epoch, in integer arithmetic: a time read back from the
    store gives exactly the number it was stored as (a float product may land one below)."""
    return (when - _EPOCH) // _MS


def key_cursor(key: str) -> str:
    """Topics (and a user's topics) are paged by key."""
    return encode_cursor(key)


def after_key(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    (key,) = decode_cursor(cursor)
    if not TOPIC_KEY.fullmatch(key):
        raise ValidationFailed.on("cursor", _NOT_OURS)
    return key


def subscriber_cursor(last: Subscription) -> str:
    """Subscribers are paged newest first by (subscribed at, user id): many users subscribe
    in the same millisecond when an app's backend adds them in bulk."""
    return encode_cursor(str(epoch_ms(last.created_at)), last.user_id)


def before_subscriber(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    ms, user_id = decode_cursor(cursor, 2)
    if not ms.isdigit() or len(ms) > 15:
        raise ValidationFailed.on("cursor", _NOT_OURS)
    return int(ms), user_id
