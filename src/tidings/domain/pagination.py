"""Opaque cursors: what the client gets back is meaningless to it and checked when it returns."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from .errors import ValidationFailed
from .ids import is_ulid

T = TypeVar("T")
MAX_LIMIT = 200
DEFAULT_LIMIT = 50


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


class HasId(Protocol):
    @property
    def id(self) -> str: ...


Identified = TypeVar("Identified", bound=HasId)


def page_of(fetched: list[Identified], limit: int) -> Page[Identified]:
    """A page from `limit + 1` rows fetched in order: the extra row only says there is more,
    and the cursor names the last item shown."""
    items = fetched[:limit]
    more = len(fetched) > limit
    return Page(items, encode_cursor(items[-1].id) if more else None)


def encode_cursor(*parts: str) -> str:
    raw = "\x1f".join(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int = 1) -> list[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = base64.urlsafe_b64decode(padded.encode("ascii")).decode().split("\x1f")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise ValidationFailed.on("cursor", "is not a cursor this service gave out") from exc
    if len(values) != parts or not all(values):
        raise ValidationFailed.on("cursor", "is not a cursor this service gave out")
    return values


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed.on("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def id_cursor(cursor: str | None) -> str | None:
    """The id a cursor of an id-ordered list names (None for the first page)."""
    if cursor is None:
        return None
    (last,) = decode_cursor(cursor)
    if not is_ulid(last):
        raise ValidationFailed.on("cursor", "is not a cursor this service gave out")
    return last
