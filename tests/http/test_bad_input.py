"""Whatever a client throws at the two busiest write endpoints, the answer is never a 5xx, every
refusal is a problem document, and a refused request writes nothing (API.md, Conventions).

The property tests generate JSON bodies (near-valid ones with one field gone wrong, and arbitrary
JSON), raw bytes under assorted content types, and check each answer; the targeted tests pin
the refusals that matter by name.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tidings.adapters.store.sql.schema import (
    deliveries,
    devices,
    idempotency_keys,
    notifications,
    users,
)
from tidings.bootstrap import Container
from tidings.entrypoints.http.app import create_app

MAX_BODY = 256 * 1024
FRESH = "\ue000fresh-user\ue000"  # stands for the example's own user id, substituted before sending
_serial = itertools.count()

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ_BYTES = settings(FUZZ, max_examples=60)


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """Like the shared `client`, but an unhandled error comes back as the 500 a real client
    would see (instead of being raised into the test), so the assertion names the status."""
    transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


# --- checks -----------------------------------------------------------------------------------
def names_field(doc: dict[str, Any], field: str) -> bool:
    """The problem names `field` itself or a place inside it (`data` for `data.n`)."""
    return any(e["field"] == field or e["field"].startswith((field + ".", field + "["))
               for e in doc.get("errors", []))


def assert_problem(r: httpx.Response, status: int | None = None) -> dict[str, Any]:
    assert r.status_code < 500, f"{r.status_code} for a client's mistake: {r.text[:500]}"
    if status is not None:
        assert r.status_code == status, r.text[:500]
    assert 400 <= r.status_code < 500, r.text[:500]
    assert r.headers["content-type"].split(";")[0].strip() == "application/problem+json", r.headers
    doc = r.json()
    assert isinstance(doc, dict), doc
    for name in ("type", "title", "detail"):
        assert isinstance(doc.get(name), str) and doc[name], doc
    assert doc.get("status") == r.status_code, doc
    for err in doc.get("errors") or []:
        assert isinstance(err.get("field"), str) and isinstance(err.get("message"), str), doc
    return doc


async def counts(container: Container) -> dict[str, int]:
    if not hasattr(container.store, "dialect"):  # DynamoDB: count the table's items by kind
        return await dynamodb_counts(container.store)
    out = {}
    async with container.store.reader() as tx:
        for table in (notifications, deliveries, devices, users, idempotency_keys):
            result = await tx.connection.execute(select(func.count()).select_from(table))
            out[table.name] = int(result.scalar_one())
    return out


async def dynamodb_counts(store: Any) -> dict[str, int]:
    kinds = {"notifications": lambda pk, sk: sk.startswith("N#"),
             "deliveries": lambda pk, sk: sk.startswith("D#"),
             "devices": lambda pk, sk: sk.startswith("DEV#"),
             "users": lambda pk, sk: pk.endswith("#USERS"),
             "idempotency_keys": lambda pk, sk: pk.startswith("IDEM#")}
    out = dict.fromkeys(kinds, 0)
    client = await store.table.client()
    async for page in client.get_paginator("scan").paginate(TableName=store.table.name,
                                                           ProjectionExpression="pk, sk"):
        for item in page["Items"]:
            for name, test in kinds.items():
                out[name] += test(item["pk"]["S"], item["sk"]["S"])
    return out


async def assert_user_untouched(client: httpx.AsyncClient, headers: dict[str, str], uid: str) -> None:
    inbox = await client.get(f"/v1/users/{uid}/notifications", headers=headers)
    assert inbox.status_code == 200, inbox.text
    assert inbox.json()["items"] == [] and inbox.json()["unread_count"] == 0
    listed = await client.get(f"/v1/users/{uid}/devices", headers=headers)
    assert listed.status_code == 200 and listed.json()["items"] == [], listed.text
    assert (await client.get(f"/v1/users/{uid}", headers=headers)).status_code == 404


def fresh_user() -> str:
    return f"fuzz-{next(_serial)}"


def substitute(value: Any, uid: str) -> Any:
    if value == FRESH:
        return uid
    if isinstance(value, list):
        return [substitute(v, uid) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, uid) for k, v in value.items()}
    return value


def post_json(client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str],
              **extra_headers: str) -> Any:
    raw = json.dumps(body)  # ASCII with \u escapes: every generated string survives the trip
    return client.post(url, content=raw, headers={**headers, "Content-Type": "application/json",
                                                  **extra_headers})


# --- strategies -------------------------------------------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
words = st.text(max_size=40)
phones = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
user_ids = st.just(FRESH) | st.text(max_size=12)

to_values = st.one_of(
    st.just({"user_id": FRESH}),
    st.fixed_dictionaries({"user_id": user_ids | json_values}),
    st.fixed_dictionaries({"user_ids": st.lists(user_ids, max_size=4) | json_values}),
    st.fixed_dictionaries({"phone": phones | words | json_values}),
    st.fixed_dictionaries({"email": st.emails() | words | json_values}),
    st.dictionaries(st.sampled_from(["user_id", "user_ids", "phone", "email", "topic", "all"]),
                    st.just(FRESH) | json_values, max_size=3),
    json_values,
)
notification_fields = {
    "channels": st.lists(st.sampled_from(["push", "in_app", "email", "sms", "fax", "", "PUSH"]),
                         max_size=5) | json_values,
    "title": words | json_values,
    "body": words | json_values,
    "data": st.dictionaries(st.text(max_size=8), json_values, max_size=5) | json_values,
    "category": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,12}", fullmatch=True) | words | json_values,
    "send_at": st.sampled_from(["2026-11-22T09:00:00Z", {"local_time": "09:00"}, "tomorrow",
                                {"local_time": "25:00"}]) | json_values,
    "ttl": st.integers(min_value=-10, max_value=3_000_000) | json_values,
    "priority": st.sampled_from(["high", "normal", "urgent", ""]) | json_values,
    "sender_id": words | json_values,
    "colour": json_values,  # not a field of the API
}
near_valid_notifications = st.fixed_dictionaries(
    {"to": to_values, "title": words},
    optional={k: v for k, v in notification_fields.items() if k != "title"})
notification_bodies = near_valid_notifications | st.fixed_dictionaries(
    {}, optional={"to": to_values, **notification_fields}) | json_values

subscriptions = st.fixed_dictionaries(
    {"endpoint": st.sampled_from(["https://push.example.com/send/abc", "http://push.example.com/x",
                                  "https://", ""]) | words | json_values,
     "keys": st.fixed_dictionaries({"p256dh": st.text(min_size=10, max_size=40) | json_values,
                                    "auth": st.text(min_size=4, max_size=24) | json_values})
     | json_values},
    optional={"expirationTime": st.none() | st.integers() | json_values, "extra": json_values})
ulids = st.from_regex(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", fullmatch=True)
device_fields = {
    "provider": st.sampled_from(["fcm", "apns", "webpush", "log", "nope", None]) | json_values,
    "device_info": words | json_values,
    "app_version": st.text(max_size=20) | json_values,
    "device_id": ulids | st.sampled_from(["not-a-ulid", ""]) | json_values,
    "colour": json_values,
}
near_valid_devices = st.fixed_dictionaries(
    {"platform": st.sampled_from(["android", "ios", "web", "Android", "", "x" * 33]) | words
     | json_values,
     "token": st.text(min_size=1, max_size=40) | subscriptions | json_values},
    optional=device_fields)
device_bodies = near_valid_devices | st.fixed_dictionaries(
    {}, optional={"platform": json_values, "token": json_values, **device_fields}) | json_values

content_types = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/problem+json",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/octet-stream", "", "application/json; charset=utf-16",
])
raw_bodies = st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()).flatmap(
    lambda b: st.sampled_from([b, b[:-1], b + b"}", b"\xff" + b, b.replace(b'"', b"'")]))


# --- property tests ---------------------------------------------------------------------------
@FUZZ
@given(body=notification_bodies)
async def test_generated_notification_bodies(client, acme, container, body):
    uid = fresh_user()
    body = substitute(body, uid)
    before = await counts(container)
    r = await post_json(client, "/v1/notifications", body, acme["headers"])
    assert r.status_code < 500, f"{r.status_code} for {body!r}: {r.text[:300]}"
    if r.status_code >= 400:
        assert_problem(r)
        assert await counts(container) == before, f"a refused request wrote something: {body!r}"
        await assert_user_untouched(client, acme["headers"], uid)
        return
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert items
    for item in items:
        # What was accepted is what was stored: reading it back gives the same document.
        back = await client.get(f"/v1/notifications/{item['id']}", headers=acme["headers"])
        assert back.status_code == 200, f"{back.status_code} reading back {body!r}: {back.text[:300]}"
        assert back.json() == item


@FUZZ
@given(body=device_bodies)
async def test_generated_device_registrations(client, acme, container, body):
    uid = fresh_user()
    before = await counts(container)
    r = await post_json(client, f"/v1/users/{uid}/devices", body, acme["headers"])
    assert r.status_code < 500, f"{r.status_code} for {body!r}: {r.text[:300]}"
    if r.status_code >= 400:
        assert_problem(r)
        assert await counts(container) == before, f"a refused request wrote something: {body!r}"
        await assert_user_untouched(client, acme["headers"], uid)
        return
    assert r.status_code in (200, 201), r.text
    device = r.json()
    assert device["user_id"] == uid
    listed = await client.get(f"/v1/users/{uid}/devices", headers=acme["headers"])
    assert listed.status_code == 200, f"{listed.status_code} listing after {body!r}: {listed.text[:300]}"
    assert [d["id"] for d in listed.json()["items"]] == [device["id"]]


@FUZZ_BYTES
@given(raw=raw_bodies, content_type=content_types,
       path=st.sampled_from(["/v1/notifications", "/v1/users/{uid}/devices"]))
async def test_raw_bytes_under_any_content_type(client, acme, container, raw, content_type, path):
    uid = fresh_user()
    before = await counts(container)
    headers = {**acme["headers"], "Content-Type": content_type}
    r = await client.post(path.format(uid=uid), content=raw, headers=headers)
    assert r.status_code < 500, f"{r.status_code} for {raw!r} as {content_type!r}: {r.text[:300]}"
    if r.status_code >= 400:
        assert_problem(r)
        assert await counts(container) == before
        await assert_user_untouched(client, acme["headers"], uid)


# --- targeted: sending ------------------------------------------------------------------------
def _data_of_json_size(size: int) -> dict[str, str]:
    data = {"k": ""}
    data["k"] = "x" * (size - len(orjson.dumps(data)))
    assert len(orjson.dumps(data)) == size
    return data


U = FRESH
REFUSED_SENDS: list[tuple[str, Any, str | None]] = [
    ("unknown field", {"to": {"user_id": U}, "title": "x", "colour": "red"}, "colour"),
    ("unknown field in to", {"to": {"user_id": U, "nickname": "x"}, "title": "x"}, None),
    ("title is a number", {"to": {"user_id": U}, "title": 5}, "title"),
    ("to is a string", {"to": U, "title": "x"}, None),
    ("to is missing", {"title": "x"}, "to"),
    ("channels is a string", {"to": {"user_id": U}, "title": "x", "channels": "push"}, None),
    ("data is a list", {"to": {"user_id": U}, "title": "x", "data": [1]}, None),
    ("ttl is negative", {"to": {"user_id": U}, "title": "x", "ttl": -1}, "ttl"),
    ("ttl is fractional", {"to": {"user_id": U}, "title": "x", "ttl": 1.5}, "ttl"),
    ("ttl over four weeks", {"to": {"user_id": U}, "title": "x", "ttl": 2_419_201}, "ttl"),
    ("unknown priority", {"to": {"user_id": U}, "title": "x", "priority": "urgent"}, "priority"),
    ("to with two keys", {"to": {"user_id": U, "phone": "+393331234567"}, "title": "x"}, None),
    ("to with no key", {"to": {}, "title": "x"}, None),
    ("user_ids empty", {"to": {"user_ids": []}, "title": "x"}, None),
    ("more than 1000 user_ids", {"to": {"user_ids": [U] + [f"u{i}" for i in range(1000)]},
                                 "title": "x"}, None),
    ("user_id empty", {"to": {"user_id": ""}, "title": "x"}, None),
    ("user_id too long", {"to": {"user_id": "u" * 257}, "title": "x"}, None),
    ("user_id with a control character", {"to": {"user_id": "a\nb"}, "title": "x"}, None),
    ("invalid phone", {"to": {"phone": "3331234567"}, "body": "x"}, None),
    ("phone with spaces", {"to": {"phone": "+39 333 1234567"}, "body": "x"}, None),
    ("phone with a trailing newline", {"to": {"phone": "+393331234567\n"}, "body": "x"}, None),
    ("invalid email", {"to": {"email": "ada.example.com"}, "body": "x"}, None),
    ("email with a trailing newline", {"to": {"email": "ada@example.com\n"}, "body": "x"}, None),
    ("unknown channel", {"to": {"user_id": U}, "title": "x", "channels": ["fax"]}, None),
    ("duplicate channel", {"to": {"user_id": U}, "title": "x", "channels": ["push", "push"]},
     "channels"),
    ("no channel", {"to": {"user_id": U}, "title": "x", "channels": []}, "channels"),
    ("push to a raw phone", {"to": {"phone": "+393331234567"}, "body": "x", "channels": ["push"]},
     "channels"),
    ("sms to a raw email", {"to": {"email": "ada@example.com"}, "body": "x", "channels": ["sms"]},
     "channels"),
    ("nothing to say", {"to": {"user_id": U}}, None),
    ("title too long", {"to": {"user_id": U}, "title": "x" * 1025}, "title"),
    ("invalid category", {"to": {"user_id": U}, "title": "x", "category": "bad category!"},
     "category"),
    ("data over 8 KiB", {"to": {"user_id": U}, "data": _data_of_json_size(8 * 1024 + 1)}, "data"),
    ("data with an integer beyond 64 bits", {"to": {"user_id": U}, "title": "x",
                                              "data": {"n": 2**64}}, "data"),
    ("data with a negative integer beyond 64 bits", {"to": {"user_id": U}, "title": "x",
                                                      "data": {"n": -(2**63) - 1}}, "data"),
    ("data with a lone surrogate", {"to": {"user_id": U}, "title": "x", "data": {"s": "\ud800"}},
     "data"),
    ("title with a lone surrogate", {"to": {"user_id": U}, "title": "\udfff"}, "title"),
    ("send_at long past", {"to": {"user_id": U}, "title": "x", "send_at": "2001-11-22T09:00:00Z"},
     "send_at"),
    ("send_at as a bad local time", {"to": {"user_id": U}, "title": "x",
                                     "send_at": {"local_time": "9:00"}}, "send_at"),
    ("send_at off the calendar", {"to": {"user_id": U}, "title": "x",
                                  "send_at": "9999-12-31T23:59:59-23:59"}, "send_at"),
    ("send_at garbage", {"to": {"user_id": U}, "title": "x", "send_at": "tomorrow"}, None),
    ("a list", [{"to": {"user_id": U}, "title": "x"}], None),
    ("a string", "hello", None),
    ("null", None, None),
]


async def test_refused_sends(client, acme, container, subtests):
    for case, body, field in REFUSED_SENDS:
        with subtests.test(case):
            uid = fresh_user()
            before = await counts(container)
            r = await post_json(client, "/v1/notifications", substitute(body, uid), acme["headers"])
            if "surrogate" in case:
                # A lone surrogate is no Unicode text: the body is refused as malformed JSON.
                doc = assert_problem(r, 400)
                assert doc["type"].endswith("json-invalid"), doc
            else:
                doc = assert_problem(r, 422)
                if field is not None:
                    assert names_field(doc, field), doc
            assert await counts(container) == before
            await assert_user_untouched(client, acme["headers"], uid)


async def test_data_of_exactly_8_kib_is_accepted(client, acme):
    data = _data_of_json_size(8 * 1024)
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "data": data},
                          headers=acme["headers"])
    assert r.status_code == 202, r.text
    assert r.json()["items"][0]["data"] == data


async def test_1000_user_ids_are_accepted(client, acme):
    ids = [f"u{i}" for i in range(1000)]
    r = await client.post("/v1/notifications", json={"to": {"user_ids": ids}, "title": "x",
                                                     "channels": ["in_app"]}, headers=acme["headers"])
    assert r.status_code == 202, r.text
    assert len(r.json()["items"]) == 1000


MALFORMED = [
    ("cut short", b'{"to": {"user_id": "u1"}, "title": '),
    ("trailing garbage", b'{"to": {"user_id": "u1"}, "title": "x"} xx'),
    ("single quotes", b"{'to': {'user_id': 'u1'}, 'title': 'x'}"),
    ("trailing comma", b'{"to": {"user_id": "u1"}, "title": "x",}'),
    ("not UTF-8", b'{"to": {"user_id": "\xff\xfe"}, "title": "x"}'),
    ("NaN is not JSON", b'{"to": {"user_id": "u1"}, "title": "x", "data": {"n": NaN}}'),
    ("Infinity is not JSON", b'{"to": {"user_id": "u1"}, "title": "x", "data": {"n": -Infinity}}'),
    ("a comment", b'{"to": {"user_id": "u1"}, /* hi */ "title": "x"}'),
    ("nested 5000 deep", b'{"to": {"user_id": "u1"}, "title": "x", "data": {"a": '
     + b"[" * 5000 + b"]" * 5000 + b"}}"),
]


async def test_malformed_json_is_a_400(client, acme, container, subtests):
    for case, raw in MALFORMED:
        with subtests.test(case):
            uid = fresh_user()
            before = await counts(container)
            r = await client.post("/v1/notifications", content=raw.replace(b'"u1"', f'"{uid}"'.encode()),
                                  headers={**acme["headers"], "Content-Type": "application/json"})
            assert_problem(r, 400)
            assert await counts(container) == before
            await assert_user_untouched(client, acme["headers"], uid)


async def test_an_empty_body_is_refused(client, acme, container):
    before = await counts(container)
    r = await client.post("/v1/notifications", content=b"",
                          headers={**acme["headers"], "Content-Type": "application/json"})
    assert_problem(r)
    assert await counts(container) == before


async def test_a_body_that_is_not_json_is_415(client, acme, container, subtests):
    for path in ("/v1/notifications", "/v1/users/u1/devices"):
        for content_type in ("text/plain", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x", "application/xml"):
            with subtests.test(path=path, content_type=content_type):
                before = await counts(container)
                r = await client.post(path, content=b'{"to": {"user_id": "u1"}, "title": "x"}',
                                      headers={**acme["headers"], "Content-Type": content_type})
                assert_problem(r, 415)
                assert await counts(container) == before
                await assert_user_untouched(client, acme["headers"], "u1")


async def test_an_oversize_body_is_413(client, acme, container, subtests):
    body = {"to": {"user_id": "u1"}, "platform": "android", "token": "t", "title": "x" * MAX_BODY}
    for path in ("/v1/notifications", "/v1/users/u1/devices"):
        with subtests.test(path):
            before = await counts(container)
            r = await client.post(path, json=body, headers=acme["headers"])
            assert_problem(r, 413)
            assert await counts(container) == before
            await assert_user_untouched(client, acme["headers"], "u1")


async def test_an_oversize_body_without_a_length_is_refused(client, acme, container, subtests):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"to": {"user_id": "u1"}, "platform": "android", "token": "t", "title": "'
        for _ in range(300):
            yield b"x" * 1024
        yield b'"}'

    for path in ("/v1/notifications", "/v1/users/u1/devices"):
        with subtests.test(path):
            before = await counts(container)
            r = await client.post(path, content=chunks(),
                                  headers={**acme["headers"], "Content-Type": "application/json"})
            # The contract asks for a 4xx problem; 413 is what the size guard means to say.
            assert_problem(r)
            assert await counts(container) == before
            await assert_user_untouched(client, acme["headers"], "u1")


async def test_an_unknown_path_is_a_404_problem(client, acme):
    assert_problem(await client.get("/v1/notificationz", headers=acme["headers"]), 404)
    assert_problem(await client.post("/v2/notifications", json={}, headers=acme["headers"]), 404)


async def test_a_wrong_method_is_a_405_problem(client, acme, subtests):
    for method, path in [
        ("PUT", "/v1/notifications"), ("PATCH", "/v1/notifications"),
        ("PUT", "/v1/notifications/01M7Y6Y2327WN1CRD5G5K9FTWM"), ("PUT", "/v1/users/u1/devices"),
        ("GET", "/v1/users/u1/tokens"),
    ]:
        with subtests.test(method=method, path=path):
            r = await client.request(method, path, json={}, headers=acme["headers"])
            assert_problem(r, 405)


async def test_a_refused_request_does_not_spend_its_idempotency_key(client, acme, container):
    h = {**acme["headers"], "Idempotency-Key": "k-refused"}
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": 5}, headers=h)
    assert_problem(r, 422)
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"}, headers=h)
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers, r.text


async def test_an_unusable_idempotency_key_is_refused_before_writing(client, acme, container):
    before = await counts(container)
    h = {**acme["headers"], "Idempotency-Key": "k" * 256}
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"}, headers=h)
    assert_problem(r, 422)
    assert await counts(container) == before


# Strings a JSON document may carry but some stores cannot: either stored faithfully or refused
# with a 4xx, never a 5xx.
AWKWARD_TEXT = [
    ("NUL in title", {"title": "a\u0000b"}),
    ("NUL in body", {"title": "x", "body": "\u0000"}),
    ("NUL in sender_id", {"title": "x", "sender_id": "s\u0000"}),
    ("NUL in a data value", {"title": "x", "data": {"k": "\u0000"}}),
    ("NUL in a data key", {"title": "x", "data": {"\u0000": 1}}),
    ("escapes and emoji", {"title": "\u2028\u2029 \U0001f514 \\u0000 \"quoted\"", "data": {"k": "\t"}}),
]


async def test_awkward_text_is_stored_faithfully_or_refused(client, acme, container, subtests):
    for case, fields in AWKWARD_TEXT:
        with subtests.test(case):
            uid = fresh_user()
            before = await counts(container)
            r = await post_json(client, "/v1/notifications", {"to": {"user_id": uid}, **fields},
                                acme["headers"])
            assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
            if r.status_code >= 400:
                assert_problem(r)
                assert await counts(container) == before
                continue
            item = r.json()["items"][0]
            for name, value in fields.items():
                assert item[name] == value
            back = await client.get(f"/v1/notifications/{item['id']}", headers=acme["headers"])
            assert back.status_code == 200 and back.json() == item


# --- targeted: devices ------------------------------------------------------------------------
SUB = {"endpoint": "https://push.example.com/send/abc", "keys": {"p256dh": "B" * 87, "auth": "A" * 22}}
REFUSED_DEVICES: list[tuple[str, Any, str | None]] = [
    ("unknown field", {"platform": "android", "token": "t", "colour": "red"}, "colour"),
    ("platform missing", {"token": "t"}, "platform"),
    ("token missing", {"platform": "android"}, "token"),
    ("platform upper case", {"platform": "Android", "token": "t"}, "platform"),
    ("platform too long", {"platform": "a" * 33, "token": "t"}, "platform"),
    ("platform a number", {"platform": 1, "token": "t"}, "platform"),
    ("token empty", {"platform": "android", "token": ""}, None),
    ("token with a space", {"platform": "android", "token": "abc def"}, None),
    ("token with a leading space", {"platform": "android", "token": " abc"}, None),
    ("token with a trailing newline", {"platform": "android", "token": "abc\n"}, None),
    ("token with a tab", {"platform": "android", "token": "a\tb"}, None),
    ("token with a no-break space", {"platform": "android", "token": "a\u00a0b"}, None),
    ("token too long", {"platform": "android", "token": "t" * 4097}, None),
    ("token a number", {"platform": "android", "token": 42}, None),
    ("token a list", {"platform": "android", "token": ["t"]}, None),
    ("subscription on android", {"platform": "android", "token": SUB}, None),
    ("subscription over http", {"platform": "web", "token": {**SUB, "endpoint": "http://x.example/1"}},
     None),
    ("subscription without keys", {"platform": "web", "token": {"endpoint": SUB["endpoint"]}}, None),
    ("subscription with short keys", {"platform": "web",
                                      "token": {**SUB, "keys": {"p256dh": "B", "auth": "A"}}}, None),
    ("unknown provider", {"platform": "android", "token": "t", "provider": "pigeon"}, "provider"),
    ("device_id not a ULID", {"platform": "android", "token": "t", "device_id": "dev-1"}, "device_id"),
    ("device_info too long", {"platform": "android", "token": "t", "device_info": "x" * 513},
     "device_info"),
    ("app_version too long", {"platform": "android", "token": "t", "app_version": "1" * 65},
     "app_version"),
    ("a list", [{"platform": "android", "token": "t"}], None),
]


async def test_refused_device_registrations(client, acme, container, subtests):
    for case, body, field in REFUSED_DEVICES:
        with subtests.test(case):
            uid = fresh_user()
            before = await counts(container)
            r = await post_json(client, f"/v1/users/{uid}/devices", body, acme["headers"])
            doc = assert_problem(r, 422)
            if field is not None:
                assert names_field(doc, field), doc
            assert await counts(container) == before
            await assert_user_untouched(client, acme["headers"], uid)


async def test_error_fields_name_the_clients_fields(client, acme, subtests):
    # `errors[].field` is a path through the request body ("to.user_id", "channels.0"), never
    # a name from inside the validation library.
    cases = [
        ("token with a space", "/v1/users/u1/devices", {"platform": "android", "token": "abc def"},
         {"token", "endpoint", "keys", "p256dh", "auth", "expirationTime"}),
        ("subscription over http", "/v1/users/u1/devices",
         {"platform": "web", "token": {**SUB, "endpoint": "http://x.example/1"}},
         {"token", "endpoint", "keys", "p256dh", "auth", "expirationTime"}),
        ("send_at garbage", "/v1/notifications",
         {"to": {"user_id": "u1"}, "title": "x", "send_at": "tomorrow"},
         {"send_at", "local_time"}),
    ]
    for case, path, body, allowed in cases:
        with subtests.test(case):
            doc = assert_problem(await client.post(path, json=body, headers=acme["headers"]), 422)
            for err in doc["errors"]:
                names = {part for part in err["field"].split(".") if not part.isdigit()}
                assert names <= allowed, f"{err['field']!r} is not a field of the request"


async def test_registering_for_an_impossible_user_id_is_refused(client, acme, container, subtests):
    # User ids are 1-256 printable characters (PUT /v1/users refuses the same ids with a 422).
    for case, user_path in [("257 characters", "u" * 257), ("NUL", "a%00b"), ("newline", "a%0Ab"),
                            ("tab", "a%09b")]:
        with subtests.test(case):
            before = await counts(container)
            r = await client.post(f"/v1/users/{user_path}/devices",
                                  json={"platform": "android", "token": f"t-{case.replace(' ', '-')}"},
                                  headers=acme["headers"])
            # NUL never gets past the URL check (400); the others are refused as user ids (422).
            assert_problem(r, 400 if case == "NUL" else 422)
            assert await counts(container) == before


AWKWARD_DEVICES = [
    ("NUL in token", {"platform": "android", "token": "a\u0000b"}),
    ("NUL in device_info", {"platform": "android", "token": "t-info", "device_info": "Pixel\u0000"}),
    ("NUL in app_version", {"platform": "android", "token": "t-ver", "app_version": "1\u0000"}),
]


async def test_awkward_device_text_is_stored_or_refused(client, acme, container, subtests):
    for case, body in AWKWARD_DEVICES:
        with subtests.test(case):
            uid = fresh_user()
            before = await counts(container)
            r = await post_json(client, f"/v1/users/{uid}/devices", body, acme["headers"])
            assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
            if r.status_code >= 400:
                assert_problem(r)
                assert await counts(container) == before
                continue
            listed = await client.get(f"/v1/users/{uid}/devices", headers=acme["headers"])
            assert listed.status_code == 200 and len(listed.json()["items"]) == 1


async def test_valid_registrations_still_work(client, acme):
    r = await client.post("/v1/users/u1/devices", json={"platform": "web", "token": SUB},
                          headers=acme["headers"])
    assert r.status_code == 201, r.text
    r = await client.post("/v1/users/u1/devices", json={"platform": "ios", "token": "t" * 4096},
                          headers=acme["headers"])
    assert r.status_code == 201, r.text


# --- ids in paths that cannot exist ------------------------------------------------------------
async def test_impossible_ids_in_paths_are_never_a_5xx(client, acme, subtests):
    for method, path in [
        ("GET", "/v1/notifications/%00"),
        ("GET", "/v1/notifications/not-a-ulid"),
        ("DELETE", "/v1/notifications/%00"),
        ("GET", "/v1/users/%00"),
        ("GET", "/v1/users/%00/devices"),
        ("GET", "/v1/users/%00/notifications"),
        ("DELETE", "/v1/users/u1/devices/%00"),
        ("POST", "/v1/users/u1/notifications/%00/read"),
    ]:
        with subtests.test(method=method, path=path):
            r = await client.request(method, path, headers=acme["headers"])
            assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
            if r.status_code >= 400:
                assert_problem(r)


async def test_an_integral_float_past_2_53_is_refused_not_changed(client, acme):
    # PostgreSQL's JSONB would keep 4.833494483119433e16 as 48334944831194330: another number.
    headers = {**acme["headers"], "Content-Type": "application/json"}
    r = await client.post("/v1/notifications", headers=headers, content=(
        b'{"to": {"user_id": "u1"}, "title": "t", "data": {"n": 4.833494483119433e16}}'))
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "data.n"
    r = await client.post("/v1/notifications", headers=headers, content=(
        b'{"to": {"user_id": "u1"}, "title": "t", "data": {"n": 9007199254740992.0, "m": 0.5}}'))
    assert r.status_code == 202, r.text
