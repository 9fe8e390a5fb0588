"""Segments: what a filter may say, how it is refused, and who is in it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.domain.errors import ValidationFailed
from tidings.domain.segments import (
    EVERYONE,
    And,
    Exists,
    In,
    NotIn,
    Or,
    Range,
    attribute_rows,
    epoch_ms,
    from_query,
    matches,
    parse_segment,
)
from tidings.domain.users import AttributeEquals, User, parse_query_value

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def user(attributes: dict[str, Any] | None = None, **profile: Any) -> User:
    profile.setdefault("created_at", NOW)
    return User("acme", profile.pop("id", "u1"), attributes=attributes or {}, **profile)


def refused(doc: Any, field: str = "filter") -> tuple[str, str]:
    with pytest.raises(ValidationFailed) as info:
        parse_segment(doc, field)
    (error,) = info.value.errors
    return error.field, error.message


# --- parsing --------------------------------------------------------------------------------
def test_equality_and_several_keys_are_all_required():
    assert parse_segment({"attributes.plan": "pro"}) == In("attributes.plan", ("pro",))
    assert parse_segment({"attributes.plan": "pro", "locale": "it"}) == And((
        In("attributes.plan", ("pro",)), In("locale", ("it",))))
    assert parse_segment({}) == EVERYONE


def test_operators_parse_into_nodes():
    seg = parse_segment({"attributes.address.city": {"$in": ["Rome", 5, True]},
                         "attributes.seats": {"$ne": 3},
                         "attributes.tags": {"$nin": ["a"], "$exists": True}})
    assert seg == And((
        In("attributes.address.city", ("Rome", 5.0, True)),
        NotIn("attributes.seats", (3.0,)),
        NotIn("attributes.tags", ("a",)),
        Exists("attributes.tags", True),
    ))


def test_bounds_on_one_field_bound_one_value():
    seg = parse_segment({"attributes.seats": {"$gte": 10, "$lt": 20, "$ne": 15}})
    assert seg == And((NotIn("attributes.seats", (15.0,)),
                       Range("attributes.seats", (("$gte", 10.0), ("$lt", 20.0)))))


def test_and_or_nest():
    seg = parse_segment({"$or": [{"attributes.plan": "pro"},
                                 {"$and": [{"timezone": "Europe/Rome"}, {"locale": {"$exists": False}}]}]})
    assert seg == Or((In("attributes.plan", ("pro",)),
                      And((In("timezone", ("Europe/Rome",)), Exists("locale", False)))))


def test_created_at_is_an_rfc3339_date_time_in_utc():
    seg = parse_segment({"created_at": {"$gte": "2026-11-21T10:00:00.123456789+01:00"}})
    assert seg == Range("created_at", (("$gte", datetime(2026, 11, 21, 9, 0, 0, 123456, tzinfo=UTC)),))
    assert parse_segment({"created_at": "2026-11-21t09:00:00z"}) == In("created_at", (NOW,))


@pytest.mark.parametrize(("doc", "field", "words"), [
    ({"attributes.plan": {"$regex": "p"}}, "filter.attributes.plan.$regex", "unknown operator"),
    ({"$nor": []}, "filter.$nor", "unknown operator"),
    ({"attributes.plan": {"$in": ["a"], "foo": 1}}, "filter.attributes.plan.foo", "unknown operator"),
    ({"name": "x"}, "filter.name", "unknown field"),
    ({"email": "a@b.co"}, "filter.email", "unknown field"),
    ({"attributes": {"plan": "pro"}}, "filter.attributes", "attributes.<name>"),
    ({"attributes.": 1}, "filter.attributes.", "attribute names"),
    ({"attributes.bad key": 1}, "filter.attributes.bad key", "attribute names"),
    ({"attributes.a..b": 1}, "filter.attributes.a..b", "attribute names"),
    ({"attributes.a.b.c.d.e": 1}, "filter.attributes.a.b.c.d.e", "at most 4"),
    ({"attributes.plan": {"$in": "pro"}}, "filter.attributes.plan.$in", "list"),
    ({"attributes.plan": {"$nin": {}}}, "filter.attributes.plan.$nin", "list"),
    ({"attributes.plan": {"$in": []}}, "filter.attributes.plan.$in", "at least one"),
    ({"attributes.plan": {"$in": list(range(1001))}}, "filter.attributes.plan.$in", "1000"),
    ({"attributes.plan": {"$in": ["a", None]}}, "filter.attributes.plan.$in[1]", "$exists"),
    ({"attributes.plan": {"$in": ["a", ["b"]]}}, "filter.attributes.plan.$in[1]", "string, number or boolean"),
    ({"attributes.plan": {"$exists": 1}}, "filter.attributes.plan.$exists", "true or false"),
    ({"attributes.plan": {"$exists": "yes"}}, "filter.attributes.plan.$exists", "true or false"),
    ({"attributes.beta": {"$gt": True}}, "filter.attributes.beta.$gt", "range"),
    ({"attributes.beta": {"$lt": None}}, "filter.attributes.beta.$lt", "range"),
    ({"attributes.beta": {"$lte": {"a": 1}}}, "filter.attributes.beta.$lte", "range"),
    ({"attributes.beta": {"$gte": [1]}}, "filter.attributes.beta.$gte", "range"),
    ({"created_at": {"$gt": 5}}, "filter.created_at.$gt", "RFC 3339"),
    ({"created_at": "yesterday"}, "filter.created_at", "RFC 3339"),
    ({"created_at": "2026-11-21T09:00:00"}, "filter.created_at", "RFC 3339"),  # no offset
    ({"created_at": "2026-11-21"}, "filter.created_at", "RFC 3339"),
    ({"created_at": "2026-13-40T09:00:00Z"}, "filter.created_at", "not a valid"),
    ({"timezone": 1}, "filter.timezone", "string"),
    ({"locale": {"$in": ["it", 5]}}, "filter.locale.$in[1]", "string"),
    ({"locale": True}, "filter.locale", "string"),
    ({"attributes.plan": None}, "filter.attributes.plan", "use $exists"),
    ({"attributes.plan": {"$ne": None}}, "filter.attributes.plan.$ne", "use $exists"),
    ({"timezone": None}, "filter.timezone", "use $exists"),
    ({"attributes.plan": ["pro"]}, "filter.attributes.plan", "string, number or boolean"),
    ({"attributes.plan": {}}, "filter.attributes.plan", "at least one operator"),
    ({"attributes.plan": {"name": "x"}}, "filter.attributes.plan", "path"),
    ({"attributes.plan": "x" * 257}, "filter.attributes.plan", "256"),
    ({"attributes.plan": {"$in": ["ok", "x" * 257]}}, "filter.attributes.plan.$in[1]", "256"),
    ({"attributes.plan": "a\x00b"}, "filter.attributes.plan", "NUL"),
    ({"attributes.plan": "\ud800"}, "filter.attributes.plan", "Unicode"),
    ({"attributes.n": 10**400}, "filter.attributes.n", "double"),
    ({"attributes.n": float("nan")}, "filter.attributes.n", "double"),
    ({"$and": []}, "filter.$and", "at least one"),
    ({"$or": []}, "filter.$or", "at least one"),
    ({"$or": {"a": 1}}, "filter.$or", "list"),
    ({"$or": [{"attributes.plan": "pro"}, "x"]}, "filter.$or[1]", "object"),
    ({"$or": [{"attributes.plan": "pro"}, {"attributes.plan": {"$gt": True}}]},
     "filter.$or[1].attributes.plan.$gt", "range"),
    ([{"attributes.plan": "pro"}], "filter", "object"),
    ("pro", "filter", "object"),
    (None, "filter", "object"),
])
def test_a_bad_filter_names_where_it_went_wrong(doc, field, words):
    where, message = refused(doc)
    assert where == field
    assert words in message


def test_the_field_prefix_is_the_callers():
    where, _ = refused({"$or": [{"attributes.plan": "pro"}, {"attributes.plan": None}]}, "to.segment")
    assert where == "to.segment.$or[1].attributes.plan"


def test_nesting_deeper_than_eight_levels_is_refused():
    doc: dict[str, Any] = {"attributes.plan": "pro"}
    for _ in range(7):
        doc = {"$or": [doc]}
    parse_segment(doc)  # 8 levels: the innermost object is the 8th
    where, message = refused({"$or": [doc]})
    assert "8 levels" in message and where.startswith("filter.$or[0].$or[0]")
    deep: dict[str, Any] = {"attributes.plan": {"$in": ["pro"]}}  # the operator object is a level
    for _ in range(7):
        deep = {"$and": [deep]}
    where, message = refused(deep)
    assert where.endswith(".attributes.plan") and "8 levels" in message


def test_too_many_conditions_or_values_are_refused():
    parse_segment({"$or": [{f"attributes.k{i}": i} for i in range(100)]})
    where, message = refused({"$or": [{f"attributes.k{i}": i} for i in range(101)]})
    assert where == "filter.$or" and "100" in message
    where, message = refused({"$and": [{"$or": [{f"attributes.k{i}": i} for i in range(50)]}
                                       for _ in range(3)]})
    assert where.startswith("filter.$and[2].$or[") and "100 conditions" in message
    many = {f"attributes.k{i}": {"$in": list(range(1000))} for i in range(6)}
    where, message = refused(many)
    assert where == "filter.attributes.k5.$in" and "5000" in message


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["attributes.plan", "attributes.a.b", "locale", "timezone", "created_at",
                         "$and", "$or", "$in", "$nin", "$ne", "$gt", "$lte", "$exists", "x"]),
        inner, max_size=4),
    max_leaves=20))
def test_any_json_parses_or_is_refused_by_validation(doc):
    try:
        seg = parse_segment(doc, "filter")
    except ValidationFailed as exc:
        assert exc.errors and exc.errors[0].field.startswith("filter")
        return
    for u in (user(), user({"plan": ["a", 1, None], "a": {"b": "x"}}, locale="it", timezone="UTC")):
        assert matches(seg, u) in (True, False)


# --- who is in a segment ------------------------------------------------------------------
def ids(doc: dict[str, Any], people: list[User]) -> list[str]:
    seg = parse_segment(doc)
    return [u.id for u in people if matches(seg, u)]


PEOPLE = [
    user({"plan": "pro", "seats": 5, "beta": True, "tags": ["a", "b", 7], "address": {"city": "Rome"}},
         id="u1", locale="it", timezone="Europe/Rome"),
    user({"plan": "free", "seats": "5", "beta": False, "tags": [], "address": {"city": 5}},
         id="u2", locale="en"),
    user({"plan": None, "seats": 5.0, "beta": 1, "tags": "a"}, id="u3",
         created_at=NOW + timedelta(days=1)),
    user({}, id="u4", created_at=NOW - timedelta(days=1)),
]


@pytest.mark.parametrize(("doc", "expected"), [
    ({"attributes.plan": "pro"}, ["u1"]),
    ({"attributes.seats": 5}, ["u1", "u3"]),  # numbers: 5 equals 5.0, never "5"
    ({"attributes.seats": "5"}, ["u2"]),
    ({"attributes.beta": True}, ["u1"]),  # a boolean only equals a boolean: 1 is not true
    ({"attributes.beta": 1}, ["u3"]),
    ({"attributes.tags": "a"}, ["u1", "u3"]),  # an array matches by any element
    ({"attributes.tags": 7}, ["u1"]),
    ({"attributes.tags": {"$in": ["b", "z"]}}, ["u1"]),
    ({"attributes.tags": {"$ne": "a"}}, ["u2", "u4"]),  # no element equal, or missing
    ({"attributes.tags": {"$nin": ["a", "b"]}}, ["u2", "u4"]),
    ({"attributes.plan": {"$ne": "pro"}}, ["u2", "u3", "u4"]),  # null and missing are different
    ({"attributes.plan": {"$exists": True}}, ["u1", "u2", "u3"]),  # null exists
    ({"attributes.plan": {"$exists": False}}, ["u4"]),
    ({"attributes.tags": {"$exists": True}}, ["u1", "u2", "u3"]),  # so does an empty array
    ({"attributes.address.city": "Rome"}, ["u1"]),
    ({"attributes.address.city": {"$gt": 1}}, ["u2"]),  # ranges stay within a type
    ({"attributes.address.city": {"$gt": "A"}}, ["u1"]),
    ({"attributes.address": {"$exists": True}}, ["u1", "u2"]),
    ({"attributes.seats": {"$gte": 5, "$lt": 6}}, ["u1", "u3"]),
    ({"attributes.seats": {"$gt": 5}}, []),
    ({"attributes.seats": {"$gt": "4"}}, ["u2"]),
    ({"attributes.seats": {"$gt": 4, "$lt": "9"}}, []),  # one value is never a number and a string
    ({"locale": "it"}, ["u1"]),
    ({"locale": {"$ne": "it"}}, ["u2", "u3", "u4"]),
    ({"locale": {"$in": ["it", "en"]}}, ["u1", "u2"]),
    ({"locale": {"$gte": "en", "$lt": "f"}}, ["u2"]),
    ({"timezone": {"$exists": False}}, ["u2", "u3", "u4"]),
    ({"created_at": {"$gt": "2026-11-21T09:00:00Z"}}, ["u3"]),
    ({"created_at": {"$lte": "2026-11-21T10:00:00+01:00"}}, ["u1", "u2", "u4"]),
    ({"created_at": "2026-11-21T09:00:00.000Z"}, ["u1", "u2"]),
    ({"created_at": {"$ne": "2026-11-21T09:00:00Z"}}, ["u3", "u4"]),
    ({"$or": [{"attributes.plan": "free"}, {"locale": "it"}]}, ["u1", "u2"]),
    ({"$and": [{"attributes.seats": 5}, {"attributes.beta": {"$ne": True}}]}, ["u3"]),
    ({}, ["u1", "u2", "u3", "u4"]),
])
def test_membership(doc, expected):
    assert ids(doc, PEOPLE) == expected


def test_range_on_an_array_wants_one_element_within_all_bounds():
    people = [user({"n": [1, 50]}, id="spread"), user({"n": [3, 100]}, id="inside")]
    assert ids({"attributes.n": {"$gt": 2, "$lt": 10}}, people) == ["inside"]
    # Bounds in separate conditions are separate: each may be met by another element.
    assert ids({"$and": [{"attributes.n": {"$gt": 2}}, {"attributes.n": {"$lt": 10}}]},
               people) == ["spread", "inside"]


def test_only_what_the_index_holds_can_match():
    long = "x" * 300
    people = [
        user({"s": long}, id="long"),
        user({"list": [{"city": "Rome"}, ["nested"]]}, id="objects-in-array"),
        user({"a": {"b": {"c": {"d": {"e": 1}}}}}, id="deep"),
        user({"a": {"bad key": 1}}, id="bad-key"),
        user({"n": 2**53 + 1}, id="big"),
    ]
    assert ids({"attributes.s": {"$gt": "a"}}, people) == []  # long strings are not compared
    assert ids({"attributes.s": {"$exists": True}}, people) == ["long"]
    assert ids({"attributes.list.city": "Rome"}, people) == []  # arrays' objects are not looked into
    assert ids({"attributes.list": {"$exists": True}}, people) == ["objects-in-array"]
    assert ids({"attributes.a.b.c.d": {"$exists": True}}, people) == ["deep"]
    assert ids({"attributes.n": 2**53}, people) == ["big"]  # numbers compare as doubles


def test_created_at_compares_in_whole_milliseconds():
    people = [user(id="a", created_at=datetime(2026, 1, 1, 0, 0, 0, 999, tzinfo=UTC))]
    assert ids({"created_at": "2026-01-01T00:00:00Z"}, people) == ["a"]
    assert ids({"created_at": {"$gt": "2026-01-01T00:00:00.0005Z"}}, people) == []
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 1, 1500, tzinfo=timezone(timedelta(hours=0)))) == 1001


# --- the index ----------------------------------------------------------------------------
def test_attribute_rows_flatten_what_segments_can_name():
    rows = attribute_rows({
        "plan": "pro", "seats": 5, "ratio": 0.5, "beta": True, "off": False, "gone": None,
        "note": "n" * 257, "big": 10**400,
        "tags": ["a", "a", 1, True, None, {"x": 1}, ["y"], "z" * 300],
        "address": {"city": "Rome", "geo": {"lat": 41.9}, "bad key": 1},
        "a": {"b": {"c": {"d": {"e": 1}}}},
        "bad key": "dropped",
    })
    assert rows == [
        ("plan", "s", "pro", None), ("seats", "n", None, 5.0), ("ratio", "n", None, 0.5),
        ("beta", "b", None, 1.0), ("off", "b", None, 0.0), ("gone", "z", None, None),
        ("note", "l", None, None), ("big", "l", None, None),
        ("tags", "a", None, None), ("tags", "s", "a", None), ("tags", "n", None, 1.0),
        ("tags", "b", None, 1.0),
        ("address", "o", None, None), ("address.city", "s", "Rome", None),
        ("address.geo", "o", None, None), ("address.geo.lat", "n", None, 41.9),
        ("a", "o", None, None), ("a.b", "o", None, None), ("a.b.c", "o", None, None),
        ("a.b.c.d", "o", None, None),
    ]
    assert attribute_rows({}) == []


# --- the query-string filters -------------------------------------------------------------
def test_from_query_keeps_what_a_query_value_may_stand_for():
    assert from_query([]) is None
    one = from_query([AttributeEquals("seats", parse_query_value("5"))])
    assert one == In("attributes.seats", ("5", 5.0))
    both = from_query([AttributeEquals("plan", parse_query_value("pro")),
                       AttributeEquals("beta", parse_query_value("true"))])
    assert both == And((In("attributes.plan", ("pro",)), In("attributes.beta", ("true", True))))
    assert ids({"attributes.seats": {"$in": ["5", 5]}}, PEOPLE) == ["u1", "u2", "u3"]
    assert [u.id for u in PEOPLE if matches(one, u)] == ["u1", "u2", "u3"]
    # What no attribute can hold matches nobody rather than failing.
    odd = from_query([AttributeEquals("n", parse_query_value("nan")),
                      AttributeEquals("s", parse_query_value("x" * 300))])
    assert odd == And((In("attributes.n", ("nan",)), In("attributes.s", ())))
    assert not any(matches(odd, u) for u in PEOPLE)


def test_names_that_are_not_strings_are_refused():
    assert refused({1: "x"}) == ("filter.1", "field names are strings")
    assert refused({"attributes.plan": {"$in": ["a"], 2: 1}}) == ("filter.attributes.plan.2",
                                                                   "unknown operator")
