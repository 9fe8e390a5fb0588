"""ULIDs: 26 Crockford base32 characters, sortable by creation time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.ids import UlidFactory, floor_id, is_ulid, new_id, timestamp_ms

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
MAX_MS = (1 << 48) - 1
MS = 1_795_000_000_000


def test_an_id_is_26_crockford_characters():
    for _ in range(100):
        value = new_id()
        assert len(value) == 26 and set(value) <= CROCKFORD and is_ulid(value)


def test_the_time_part_is_the_creation_time():
    before = int(time.time() * 1000)
    value = new_id()
    after = int(time.time() * 1000)
    assert before <= timestamp_ms(value) <= after
    assert timestamp_ms(new_id(MS)) == MS


def test_ids_within_one_millisecond_are_strictly_increasing():
    factory = UlidFactory()
    ids = [factory.new(MS) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {timestamp_ms(i) for i in ids} == {MS}


def test_ids_of_later_milliseconds_sort_after():
    factory = UlidFactory()
    ids = [factory.new(MS + i // 3) for i in range(300)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ids_within_one_millisecond_stay_increasing_when_another_millisecond_is_minted_between():
    # The module promises: ids minted in one process within one millisecond are strictly
    # increasing. Requests mint ids with the time they read before an await (the send path
    # plans with `now` taken before it looks the recipients up), so ids of one millisecond
    # interleave with ids of the next one.
    factory = UlidFactory()
    same_ms = []
    for _ in range(50):
        same_ms.append(factory.new(MS))
        factory.new(MS + 1)
    assert same_ms == sorted(same_ms), "ids of one millisecond came out of order"


def test_the_global_factory_is_monotonic_for_one_time():
    ids = [new_id(MS + 5) for _ in range(200)]
    assert ids == sorted(ids) and len(set(ids)) == 200


@given(st.integers(min_value=0, max_value=MAX_MS))
def test_floor_id_and_timestamp_ms_round_trip(ms):
    floor = floor_id(ms)
    assert is_ulid(floor) and timestamp_ms(floor) == ms
    assert floor.endswith("0" * 16)


@given(st.integers(min_value=0, max_value=MAX_MS - 1))
def test_floor_id_bounds_every_id_of_its_millisecond(ms):
    minted = UlidFactory().new(ms)
    assert floor_id(ms) <= minted < floor_id(ms + 1)


def test_floor_id_of_a_negative_time_is_the_smallest_id():
    assert floor_id(-10) == floor_id(0) == "0" * 26


def test_timestamp_ms_reads_lowercase_too():
    value = new_id(MS)
    assert timestamp_ms(value.lower()) == MS


@pytest.mark.parametrize("value", [
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "01arz3ndektsv4rrffq69g5fav",
    "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    "0" * 26,
])
def test_is_ulid_accepts(value):
    assert is_ulid(value)


@pytest.mark.parametrize("value", [
    "",
    "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25
    "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27
    "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",  # more than 48 bits of time
    "01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not Crockford
    "01ARZ3NDEKTSV4RRFFQ69G5FAL",
    "01ARZ3NDEKTSV4RRFFQ69G5FAO",
    "01ARZ3NDEKTSV4RRFFQ69G5FAU",
    "01ARZ3NDEKTSV4RRFFQ69G5FA-",
    "01ARZ3NDEKTSV4RRFFQ69G5FA\n",
])
def test_is_ulid_refuses(value):
    assert not is_ulid(value)
