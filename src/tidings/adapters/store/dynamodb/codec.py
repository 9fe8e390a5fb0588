"""Items in DynamoDB's wire format and back. Only keys, counters, flags and times are native
attributes; free-form documents (a notification's data, a profile's attributes) are stored as
JSON text, so that any JSON value survives as it came (DynamoDB has no float, no empty key).
A long document (an e-mail's HTML) is stored compressed (`packed`), as DynamoDB holds at most
400 KB an item and bills writes by the kilobyte."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

Item = dict[str, dict[str, Any]]
# A document whose JSON is longer than this is stored compressed.
PACK_OVER = 2048


def to_attr(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    if isinstance(value, datetime):
        return {"N": str(us(value))}
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return {"L": [{"S": v} for v in value]}
    raise TypeError(f"store {type(value).__name__} as JSON text, not as an attribute")


def from_attr(attr: dict[str, Any]) -> Any:
    (kind, value), = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return int(value) if "." not in value and "e" not in value.lower() else float(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "SS":
        return list(value)
    if kind == "B":
        return bytes(value)
    raise TypeError(f"unexpected DynamoDB attribute type {kind}")


def encode(values: dict[str, Any]) -> Item:
    """A plain dict as an item; None values are left out (a missing attribute keeps sparse
    indexes sparse)."""
    return {k: to_attr(v) for k, v in values.items() if v is not None}


def decode(item: Item) -> dict[str, Any]:
    return {k: from_attr(v) for k, v in item.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(at: datetime) -> int:
    """A time as whole microseconds since the epoch: exact, unlike a float timestamp."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def at_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def ms(at: datetime) -> int:
    return us(at) // 1000


def dumps(doc: Any) -> str:
    return orjson.dumps(doc).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def packed(doc: Any) -> str | bytes | None:
    """A document as JSON text, or compressed when long (see `PACK_OVER`); None stays None."""
    if doc is None:
        return None
    text = orjson.dumps(doc)
    return text.decode() if len(text) <= PACK_OVER else zlib.compress(text, 6)


def unpacked(value: str | bytes | None) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes):
        return orjson.loads(zlib.decompress(value))
    return orjson.loads(value)
