"""Segments: a filter over users' profiles and attributes (parsed and checked here, translated
into queries by each store), and the attribute rows that let a store index every attribute.

A segment is a JSON object in the style of MongoDB queries::

    {"attributes.plan": "pro", "locale": {"$in": ["it-IT", "it"]},
     "$or": [{"attributes.seats": {"$gte": 10}}, {"attributes.beta": true}]}

Fields: `attributes.<name>` (nested objects by path, `attributes.address.city`, at most four
names deep), `timezone`, `locale` and `created_at` (an RFC 3339 date-time). Several fields in
one object, or several operators on one field, must all hold (AND); `$and` and `$or` take a
non-empty list of such objects, and an empty object matches every user.

Operators and what they match, the same in every store and in `matches`:

- `value` (equality) and `$in: [values]`: the field equals a value. An attribute holding an
  array matches when any of its elements does. Equality is by type: a number never equals a
  string (`5` is not `"5"`), a boolean only equals a boolean, and numbers compare as
  IEEE doubles (`5` equals `5.0`). `null` is not a value to compare: use `$exists`.
- `$ne: value` and `$nin: [values]`: the exact opposite of equality and `$in`: users whose
  field is missing, null, of another type or different; for an array, no element equal.
- `$gt`, `$gte`, `$lt`, `$lte`: numbers against numbers, strings against strings (by Unicode
  code point, as Python and PostgreSQL's "C" collation order them), date-times on
  `created_at` (in whole milliseconds, as stored); a value of another type never matches.
  The bounds given in one object hold for one same value: `{"$gte": 10, "$lt": 20}` on an
  array wants one element between 10 and 20 (MongoDB's `$elemMatch`; plain MongoDB would take
  5 and 50 as well), which is what one means and what an index answers.
- `$exists: true|false`: whether the field is there at all, whatever its value (`null`
  included).

Only what the attribute index holds can match: strings of at most 256 characters (longer ones
only count for `$exists`), finite numbers, booleans; the scalar elements of an array (its
objects and arrays are not looked into); members of objects up to four names deep whose names
are valid attribute names. Filters are bounded: nesting 8 levels deep, 100 conditions, 1,000
values in one `$in`, 5,000 in all, strings of 256 characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeAlias

from .errors import ValidationFailed
from .users import AttributeEquals, User
from .validation import ATTRIBUTE_KEY

MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_IN = 1000
MAX_VALUES = 5000
MAX_TEXT = 256
MAX_LEVELS = 4  # names in an attribute path, and levels of objects the index flattens
PROFILE_FIELDS = ("timezone", "locale", "created_at")
RangeOp = Literal["$gt", "$gte", "$lt", "$lte"]
RANGE_OPERATORS: dict[str, RangeOp] = {"$gt": "$gt", "$gte": "$gte", "$lt": "$lt", "$lte": "$lte"}
OPERATORS = ("$in", "$nin", "$ne", "$exists", *RANGE_OPERATORS)

Value: TypeAlias = str | float | bool | datetime
Row: TypeAlias = tuple[str, str, str | None, float | None]


@dataclass(frozen=True)
class In:
    """`field` equals one of `values` (equality is an `In` of one value)."""

    field: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class NotIn:
    """`field` is missing or equals none of `values` (`$ne`, `$nin`): whom `In` leaves out."""

    field: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Exists:
    field: str
    present: bool


@dataclass(frozen=True)
class Range:
    """Every bound holds for one same value of `field` (for an array, one same element)."""

    field: str
    bounds: tuple[tuple[RangeOp, Value], ...]


@dataclass(frozen=True)
class And:
    parts: tuple[Segment, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Segment, ...]


Segment: TypeAlias = In | NotIn | Exists | Range | And | Or
EVERYONE: Segment = And(())


def attribute_path(field: str) -> str | None:
    """The path inside `attributes` that a field names ("address.city"), None for a profile field."""
    return field[len("attributes."):] if field.startswith("attributes.") else None


def epoch_ms(when: datetime) -> int:
    """Whole milliseconds since the epoch, exactly (the unit stores keep times in); a time
    without a zone is taken as UTC."""
    return ((when if when.tzinfo else when.replace(tzinfo=UTC)) - _EPOCH) // _MS


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")


# --- parsing --------------------------------------------------------------------------------
def parse_segment(doc: object, field: str = "segment") -> Segment:
    """The segment `doc` describes; a ValidationFailed naming `field` and the path inside it
    (`to.segment.$or[1].attributes.plan`) when it is not one."""
    return _Parser().filter(doc, field, 1)


def _shown(key: object) -> str:
    text = str(key)
    return text if len(text) <= 80 else text[:80] + "…"


class _Parser:
    def __init__(self) -> None:
        self.conditions = 0
        self.values = 0

    def filter(self, doc: object, where: str, depth: int) -> Segment:
        if depth > MAX_DEPTH:
            raise ValidationFailed.on(where, f"filters nest at most {MAX_DEPTH} levels deep")
        if not isinstance(doc, dict):
            raise ValidationFailed.on(where, "must be an object of conditions")
        parts: list[Segment] = []
        for key, value in doc.items():
            here = f"{where}.{_shown(key)}"
            if not isinstance(key, str):
                raise ValidationFailed.on(here, "field names are strings")
            if key in ("$and", "$or"):
                if not isinstance(value, list):
                    raise ValidationFailed.on(here, "must be a list of filters")
                if not value:
                    raise ValidationFailed.on(here, "must hold at least one filter")
                if len(value) > MAX_CONDITIONS:
                    raise ValidationFailed.on(here, f"holds at most {MAX_CONDITIONS} filters")
                children = tuple(self.filter(item, f"{here}[{i}]", depth + 1)
                                 for i, item in enumerate(value))
                parts.append(And(children) if key == "$and" else Or(children))
            elif key.startswith("$"):
                raise ValidationFailed.on(here, "unknown operator; only $and and $or combine "
                                                "filters, the others apply to a field")
            else:
                parts.extend(self.field(_field_name(key, here), value, here, depth))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def field(self, name: str, value: object, here: str, depth: int) -> list[Segment]:
        if not isinstance(value, dict):
            return [In(name, (self.value(name, value, here),))]
        if depth + 1 > MAX_DEPTH:
            raise ValidationFailed.on(here, f"filters nest at most {MAX_DEPTH} levels deep")
        if not value:
            raise ValidationFailed.on(here, "needs at least one operator, such as $in or $gt")
        if not any(isinstance(key, str) and key.startswith("$") for key in value):
            raise ValidationFailed.on(here, "compare with a string, number or boolean, or use "
                                            "operators such as $in; name a nested attribute by "
                                            "its path (attributes.address.city)")
        parts: list[Segment] = []
        bounds: list[tuple[RangeOp, Value]] = []
        for op, arg in value.items():
            where = f"{here}.{_shown(op)}"
            if not isinstance(op, str):
                raise ValidationFailed.on(where, "unknown operator")
            if op in RANGE_OPERATORS:
                self.count(where)
                if isinstance(arg, bool) or arg is None or isinstance(arg, dict | list):
                    raise ValidationFailed.on(where, "a range compares numbers, strings or "
                                                     "(on created_at) date-times")
                bounds.append((RANGE_OPERATORS[op], self.value(name, arg, where, counted=True)))
            else:
                parts.append(self.operator(name, op, arg, where))
        if bounds:
            parts.append(Range(name, tuple(bounds)))
        return parts

    def operator(self, name: str, op: str, arg: object, here: str) -> Segment:
        self.count(here)
        if op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise ValidationFailed.on(here, "must be a list of values")
            if not arg:
                raise ValidationFailed.on(here, "must list at least one value")
            if len(arg) > MAX_IN:
                raise ValidationFailed.on(here, f"lists at most {MAX_IN} values")
            self.values += len(arg)
            if self.values > MAX_VALUES:
                raise ValidationFailed.on(here, f"a filter lists at most {MAX_VALUES} values in all")
            values = tuple(self.value(name, v, f"{here}[{i}]", counted=True)
                           for i, v in enumerate(arg))
            return In(name, values) if op == "$in" else NotIn(name, values)
        if op == "$ne":
            return NotIn(name, (self.value(name, arg, here, counted=True),))
        if op == "$exists":
            if not isinstance(arg, bool):
                raise ValidationFailed.on(here, "must be true or false")
            return Exists(name, arg)
        raise ValidationFailed.on(here, "unknown operator; use one of " + ", ".join(OPERATORS))

    def count(self, here: str) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise ValidationFailed.on(here, f"a filter holds at most {MAX_CONDITIONS} conditions")

    def value(self, name: str, value: object, here: str, counted: bool = False) -> Value:
        if not counted:
            self.count(here)
        if value is None:
            raise ValidationFailed.on(here, "null is not a value to compare; use $exists")
        if name == "created_at":
            if not isinstance(value, str):
                raise ValidationFailed.on(here, "must be an RFC 3339 date-time string")
            return _datetime(value, here)
        if name in PROFILE_FIELDS:
            if not isinstance(value, str):
                raise ValidationFailed.on(here, "must be a string")
            return _text(value, here)
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _text(value, here)
        if isinstance(value, int | float):
            number = _number(value)
            if number is None:
                raise ValidationFailed.on(here, "is not a number a double can hold")
            return number
        raise ValidationFailed.on(here, "must be a string, number or boolean")


def _field_name(key: str, here: str) -> str:
    if key in PROFILE_FIELDS:
        return key
    if key == "attributes":
        raise ValidationFailed.on(here, "name an attribute by its path: attributes.<name>")
    path = attribute_path(key)
    if path is None:
        raise ValidationFailed.on(here, "unknown field; filter on attributes.<name>, timezone, "
                                        "locale or created_at")
    names = path.split(".")
    if len(names) > MAX_LEVELS:
        raise ValidationFailed.on(here, f"attribute paths have at most {MAX_LEVELS} names")
    if not all(ATTRIBUTE_KEY.fullmatch(n) for n in names):
        raise ValidationFailed.on(here, "attribute names match [A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
    return key


def _text(value: str, here: str) -> str:
    if len(value) > MAX_TEXT:
        raise ValidationFailed.on(here, f"strings are at most {MAX_TEXT} characters")
    if not _comparable_text(value):
        raise ValidationFailed.on(here, "must be valid Unicode text without NUL characters")
    return value


def _datetime(value: str, here: str) -> datetime:
    found = _RFC3339.fullmatch(value)
    if found is None:
        raise ValidationFailed.on(here, "must be an RFC 3339 date-time with an offset, such as "
                                        "2026-11-21T09:00:00Z")
    day, time, fraction, offset = found.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    text = f"{day}T{time}{'.' + fraction[:6].ljust(6, '0') if fraction else ''}{offset}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed.on(here, "is not a valid date-time") from exc


# --- what the index holds -------------------------------------------------------------------
def _comparable_text(value: str) -> bool:
    if len(value) > MAX_TEXT or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _number(value: int | float) -> float | None:
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _scalar_row(value: object) -> tuple[str, str | None, float | None]:
    """(kind, text, num) of a value that is neither an object nor an array."""
    if value is None:
        return "z", None, None
    if isinstance(value, bool):
        return "b", None, 1.0 if value else 0.0
    if isinstance(value, str):
        return ("s", value, None) if _comparable_text(value) else ("l", None, None)
    if isinstance(value, int | float):
        number = _number(value)
        return ("n", None, number) if number is not None else ("l", None, None)
    return "l", None, None


def attribute_rows(attributes: Mapping[str, Any]) -> list[Row]:
    """What a store indexes of one user's attributes: (path, kind, text, num) rows.

    kind is s(tring), n(umber), b(oolean, 0/1 in num), z (null), o(bject), a(rray) or l (held
    but not comparable: a long string, a number a double cannot hold). An object gives its
    own row and its members' (four names deep at most); an array its own row and one per
    distinct comparable scalar element, under the array's path."""
    rows: dict[Row, None] = {}
    _flatten(attributes, "", 1, rows)
    return list(rows)


def _flatten(obj: Mapping[Any, Any], prefix: str, level: int, rows: dict[Row, None]) -> None:
    for key, value in obj.items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
            continue
        path = prefix + key
        if isinstance(value, Mapping):
            rows[(path, "o", None, None)] = None
            if level < MAX_LEVELS:
                _flatten(value, path + ".", level + 1, rows)
        elif isinstance(value, list | tuple):
            rows[(path, "a", None, None)] = None
            for item in value:
                kind, text, num = _scalar_row(item)
                if kind in _COMPARABLE:
                    rows[(path, kind, text, num)] = None
        else:
            rows[(path, *_scalar_row(value))] = None


_COMPARABLE = ("s", "n", "b")


# --- evaluation -----------------------------------------------------------------------------
Key: TypeAlias = tuple[str, Any]  # (type tag, value): s str · n float · b bool · t int ms


def _key(value: Value) -> Key:
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, datetime):
        return "t", epoch_ms(value)
    if isinstance(value, str):
        return "s", value
    return "n", float(value)


def _lookup(field: str, user: User) -> tuple[bool, list[Key]]:
    """Whether the user has the field, and the comparable values it holds."""
    path = attribute_path(field)
    if path is None:
        if field == "created_at":
            return (False, []) if user.created_at is None else (True, [_key(user.created_at)])
        value = user.timezone if field == "timezone" else user.locale
        return (False, []) if value is None else (True, [("s", value)])
    current: Any = user.attributes
    for name in path.split("."):
        if not isinstance(current, Mapping) or name not in current:
            return False, []
        current = current[name]
    items = current if isinstance(current, list | tuple) else [current]
    keys: list[Key] = []
    for item in items:
        if isinstance(item, Mapping | list | tuple):
            continue
        kind, text, num = _scalar_row(item)
        if kind == "s":
            keys.append(("s", text))
        elif kind == "n":
            keys.append(("n", num))
        elif kind == "b":
            keys.append(("b", num == 1.0))
    return True, keys


def _holds(op: RangeOp, left: Any, right: Any) -> bool:
    if op == "$gt":
        return bool(left > right)
    if op == "$gte":
        return bool(left >= right)
    if op == "$lt":
        return bool(left < right)
    return bool(left <= right)


def matches(segment: Segment, user: User) -> bool:
    """Whether `user` is in `segment`, by the rules of the module docstring: what a store's
    query selects, computed in memory (for stores that cannot query, and to check them)."""
    if isinstance(segment, And):
        return all(matches(part, user) for part in segment.parts)
    if isinstance(segment, Or):
        return any(matches(part, user) for part in segment.parts)
    found, keys = _lookup(segment.field, user)
    if isinstance(segment, Exists):
        return found == segment.present
    if isinstance(segment, In | NotIn):
        wanted = {_key(v) for v in segment.values}
        hit = any(k in wanted for k in keys)
        return hit if isinstance(segment, In) else not hit
    bounds = [(op, _key(value)) for op, value in segment.bounds]
    return any(all(tag == t and _holds(op, v, bound) for op, (tag, bound) in bounds)
               for t, v in keys)


def from_query(filters: list[AttributeEquals]) -> Segment | None:
    """The segment of `?attribute.<name>=<value>` filters: each an `$in` over what its text may
    stand for (see users.parse_query_value), all of them together."""
    parts: list[Segment] = []
    for f in filters:
        # A value no attribute can hold (too long, NaN) matches nobody rather than failing.
        values = tuple(v for v in f.values
                       if (isinstance(v, str) and _comparable_text(v))
                       or isinstance(v, bool)
                       or (isinstance(v, int | float) and _number(v) is not None))
        parts.append(In("attributes." + f.key,
                        tuple(v if isinstance(v, str | bool) else float(v) for v in values)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))
