"""Opaque cursors and page limits."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.errors import ValidationFailed
from tidings.domain.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    check_limit,
    decode_cursor,
    encode_cursor,
)

part = st.text(min_size=1, max_size=60).filter(lambda s: "\x1f" not in s)


@given(part)
def test_a_cursor_round_trips(value):
    cursor = encode_cursor(value)
    assert decode_cursor(cursor) == [value]
    # URL-safe and unpadded: it goes into a query string as it is.
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor


@given(st.lists(part, min_size=1, max_size=4))
def test_a_cursor_of_several_parts_round_trips(parts):
    assert decode_cursor(encode_cursor(*parts), parts=len(parts)) == parts


def test_a_ulid_cursor_round_trips():
    assert decode_cursor(encode_cursor("01M7Y6Y2327WN1CRD5G5K9FTWM")) == ["01M7Y6Y2327WN1CRD5G5K9FTWM"]


def _raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "",
    "!!!!",
    "a",  # one base64 character is never a whole byte
    "not base64 ☃",
    "\x00\x00",
    _raw(b"\xff\xfe\xfd"),  # not UTF-8
    _raw(b""),
    _raw(b"a\x1fb"),  # two parts where one is expected
    _raw(b"a\x1f"),  # an empty part
])
def test_garbage_cursors_are_a_validation_error(cursor):
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.errors[0].field == "cursor"


def test_a_cursor_with_the_wrong_number_of_parts_is_refused():
    with pytest.raises(ValidationFailed):
        decode_cursor(encode_cursor("a"), parts=2)
    with pytest.raises(ValidationFailed):
        decode_cursor(encode_cursor("a", "b", "c"), parts=2)


@given(st.text(max_size=80))
def test_any_text_decodes_or_is_a_validation_error(text):
    try:
        values = decode_cursor(text)
    except ValidationFailed:
        return
    assert len(values) == 1 and values[0]


@pytest.mark.parametrize("limit", [1, DEFAULT_LIMIT, MAX_LIMIT])
def test_limits_in_range(limit):
    assert check_limit(limit) == limit


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 10**6])
def test_limits_out_of_range(limit):
    with pytest.raises(ValidationFailed) as info:
        check_limit(limit)
    assert info.value.errors[0].field == "limit"
