"""The rules for values users hand us: phone numbers, e-mail addresses, time zones, ids."""

from __future__ import annotations

import pytest

from tidings.domain.errors import ValidationFailed
from tidings.domain.validation import (
    check_app_id,
    check_user_id,
    is_e164,
    is_email,
    is_locale,
    is_timezone,
    is_user_id,
)


@pytest.mark.parametrize("value", ["+393331234567", "+14155552671", "+4912345", "+123456789012345"])
def test_e164_accepts(value):
    assert is_e164(value)


@pytest.mark.parametrize("value", [
    "", "+", "393331234567", "+0393331234567", "+123456", "+1234567890123456",
    "+39 333 1234567", "+39-333-1234567", "+39333123456a", "++393331234567", "00393331234567",
    " +393331234567", "+393331234567 ",
    "+393331234567\n",  # a trailing newline is not part of a phone number
    "+٣٩٣٣٣١٢٣٤٥٦٧",  # other scripts' digits
])
def test_e164_refuses(value):
    assert not is_e164(value)


@pytest.mark.parametrize("value", [
    "ada@example.com", "a.b+tag@sub.example.co", "o'brien@example.ie", "x@a-b.example.org",
    "A1@EXAMPLE.COM", "a" * 64 + "@example.com",
])
def test_email_accepts(value):
    assert is_email(value)


@pytest.mark.parametrize("value", [
    "", "ada", "ada@", "@example.com", "ada@example", "ada@@example.com", "a..b@example.com",
    "ada@example..com", "ada@exa_mple.com", "ada@-example.com", "ada@example-.com",
    "ada @example.com", "ada@exam ple.com", "a" * 65 + "@example.com",
    "a@" + ".".join(["b" * 60] * 5) + ".com",  # longer than 254
    "ada@example.com\n",  # a trailing newline is not part of an address
    "ada@example.com ",
])
def test_email_refuses(value):
    assert not is_email(value)


@pytest.mark.parametrize("value", ["Europe/Rome", "UTC", "America/Argentina/Buenos_Aires",
                                   "Asia/Kolkata", "Etc/GMT+5"])
def test_iana_time_zones_are_accepted(value):
    assert is_timezone(value)


@pytest.mark.parametrize("value", ["", "Mars/Olympus_Mons", "europe/rome", "Europe/Rome ",
                                   "Europe/Rome\n", "+02:00", "CEST2", "Europe"])
def test_other_time_zone_names_are_refused(value):
    assert not is_timezone(value)


@pytest.mark.parametrize("value", ["a", "acme", "0", "a-b_c9", "a" * 64, "9lives"])
def test_app_ids_accepted(value):
    assert check_app_id(value) == value


@pytest.mark.parametrize("value", [
    "", "Acme", "-acme", "_acme", "a" * 65, "a b", "a.b", "a/b", "açme", "acme\n", "\nacme",
])
def test_app_ids_refused(value):
    with pytest.raises(ValidationFailed) as info:
        check_app_id(value)
    assert info.value.errors[0].field == "app_id"


@pytest.mark.parametrize("value", ["it", "it-IT", "en_US", "zh-Hant-TW", "fil", "es-419",
                                   "de-CH-1996"])
def test_locales_accepted(value):
    assert is_locale(value)


@pytest.mark.parametrize("value", ["", "i", "italian", "it-", "it IT", "12", "it-IT-", "it--IT",
                                   "it-IT\n", "en-US-a-b-c"])
def test_locales_refused(value):
    assert not is_locale(value)


@pytest.mark.parametrize("value", ["u1", "ada@example.com", "x" * 256, "contract 42/7", "ü"])
def test_user_ids_accepted(value):
    assert is_user_id(value) and check_user_id(value) == value


@pytest.mark.parametrize("value", ["", "x" * 257, "a\nb", "a\x00b", "tab\there"])
def test_user_ids_refused(value):
    assert not is_user_id(value)
    with pytest.raises(ValidationFailed) as info:
        check_user_id(value, "to.user_id")
    assert info.value.errors[0].field == "to.user_id"
