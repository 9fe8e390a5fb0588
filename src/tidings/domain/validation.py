"""Rules for the values users hand us: phone numbers, e-mail addresses, time zones, ids."""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache

from .errors import ValidationFailed

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
APP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Local part and domain kept deliberately simple and strict: the providers reject the exotic.
EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
# A Secrets Manager secret's ARN (configuration: where a key is kept); the group is its region.
SECRETS_MANAGER_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:secretsmanager:([a-z0-9-]+):\d{12}:secret:[A-Za-z0-9/_+=.@-]+$")
LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$")
MAX_USER_ID = 256


def is_e164(value: str) -> bool:
    return bool(E164.fullmatch(value))


def is_email(value: str) -> bool:
    return len(value) <= 254 and bool(EMAIL.fullmatch(value)) and ".." not in value


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_timezone(value: str) -> bool:
    return value in _zones()


def is_locale(value: str) -> bool:
    return bool(LOCALE.fullmatch(value))


def is_user_id(value: str) -> bool:
    return 1 <= len(value) <= MAX_USER_ID and value.isprintable()


def check_user_id(value: str, field_name: str = "user_id") -> str:
    if not is_user_id(value):
        raise ValidationFailed.on(field_name, "must be 1-256 printable characters")
    return value


def check_app_id(value: str) -> str:
    if not APP_ID.fullmatch(value):
        raise ValidationFailed.on("app_id", "must match [a-z0-9][a-z0-9_-]{0,63}")
    return value
