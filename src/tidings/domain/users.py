"""Recipients: the profile an app keeps of each of its users, and filters over it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ValidationFailed
from .validation import ATTRIBUTE_KEY


@dataclass
class User:
    app_id: str
    id: str
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Set by a hard bounce or complaint: e-mail to this address is skipped until it changes.
    email_undeliverable_at: datetime | None = None
    email_undeliverable_reason: str | None = None
    # {"start": "HH:MM", "end": "HH:MM"}: push and SMS wait while it is quiet for the user.
    quiet_hours: dict[str, str] | None = None


@dataclass(frozen=True)
class AttributeEquals:
    """`attributes.<key>` equals one of `values` (a query string's text and what it parses as)."""

    key: str
    values: tuple[Any, ...]


def parse_query_value(text: str) -> tuple[Any, ...]:
    """A query-string value may stand for a string, a number or a boolean; match any of them."""
    values: list[Any] = [text]
    if text in ("true", "false"):
        values.append(text == "true")
    else:
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            values.append(int(number) if number.is_integer() and "." not in text else number)
    return tuple(values)


def attribute_filters(params: list[tuple[str, str]]) -> list[AttributeEquals]:
    filters = []
    for name, value in params:
        if not name.startswith("attribute."):
            continue
        key = name.removeprefix("attribute.")
        if not ATTRIBUTE_KEY.fullmatch(key):
            raise ValidationFailed.on(name, "attribute names match [A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
        filters.append(AttributeEquals(key, parse_query_value(value)))
    if len(filters) > 16:
        raise ValidationFailed.on("attribute", "at most 16 attribute filters")
    return filters
