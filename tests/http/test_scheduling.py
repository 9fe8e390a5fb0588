"""Scheduled sends: `send_at` as an instant or as a local time of each recipient's day, the
`scheduled` status, firing on time, and canceling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import create_app_with_key, drain

NOW = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)  # a Saturday; Europe moves clocks on the 28th


@pytest.fixture(autouse=True)
def _fixed_now(clock):
    clock.current = NOW


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send(client, app, expect=202, **body):
    body.setdefault("to", {"user_id": "u1"})
    body.setdefault("title", "Hello")
    r = await client.post("/v1/notifications", json=body, headers=app["headers"])
    assert r.status_code == expect, r.text
    return r.json()


async def inbox(client, app, user="u1"):
    r = await client.get(f"/v1/users/{user}/notifications", headers=app["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_scheduled_send_waits_outside_the_inbox_then_fires(client, acme, container, clock):
    await client.post("/v1/users/u1/devices", json={"platform": "android", "token": "t1"},
                      headers=acme["headers"])
    at = NOW + timedelta(hours=1)
    (n,) = (await send(client, acme, send_at=iso(at), channels=["push", "in_app"]))["items"]
    assert n["status"] == "scheduled" and n["send_at"] == iso(at) and n["deliveries"] == []
    listed = await inbox(client, acme)
    assert listed["items"] == [] and listed["unread_count"] == 0
    r = await client.post(f"/v1/users/u1/notifications/{n['id']}/read", headers=acme["headers"])
    assert r.status_code == 404  # not in the inbox yet
    assert await container.scheduler.fire_due() == 0
    clock.current = at - timedelta(milliseconds=1)
    assert await container.scheduler.fire_due() == 0
    clock.current = at
    assert await container.scheduler.fire_due() == 1
    got = (await client.get(f"/v1/notifications/{n['id']}", headers=acme["headers"])).json()
    assert got["status"] == "queued" and {d["channel"] for d in got["deliveries"]} == {"push", "in_app"}
    listed = await inbox(client, acme)
    assert [i["id"] for i in listed["items"]] == [n["id"]] and listed["unread_count"] == 1
    await drain(container)
    got = (await client.get(f"/v1/notifications/{n['id']}", headers=acme["headers"])).json()
    assert got["status"] == "sent"
    assert await container.scheduler.fire_due() == 0  # fired once


async def test_devices_are_those_of_the_moment_it_fires(client, acme, container, clock):
    (n,) = (await send(client, acme, send_at=iso(NOW + timedelta(minutes=5)),
                       channels=["push"]))["items"]
    await client.post("/v1/users/u1/devices", json={"platform": "ios", "token": "later"},
                      headers=acme["headers"])
    clock.advance(300)
    await container.scheduler.fire_due()
    got = (await client.get(f"/v1/notifications/{n['id']}", headers=acme["headers"])).json()
    assert [d["status"] for d in got["deliveries"]] == ["pending"]


async def test_the_scheduled_notification_takes_its_place_in_the_inbox_by_its_time(
        client, acme, container, clock):
    later = (await send(client, acme, title="later", channels=["in_app"],
                        send_at=iso(NOW + timedelta(minutes=10))))["items"][0]
    clock.advance(60)
    await send(client, acme, title="meanwhile", channels=["in_app"])
    clock.advance(600)
    await container.scheduler.fire_due()
    clock.advance(60)
    await send(client, acme, title="after", channels=["in_app"])
    titles = [i["title"] for i in (await inbox(client, acme))["items"]]
    assert titles == ["after", "later", "meanwhile"]
    assert later["id"] in [i["id"] for i in (await inbox(client, acme))["items"]]


@pytest.mark.parametrize(("timezone", "local", "expected"), [
    ("Asia/Tokyo", "09:00", datetime(2027, 3, 28, 0, 0, tzinfo=UTC)),  # 09:00 JST tomorrow
    ("America/New_York", "09:00", datetime(2027, 3, 27, 13, 0, tzinfo=UTC)),  # today, EDT
    ("Europe/Rome", "02:30", datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),  # no 02:30 that night: 03:00
    ("Europe/Rome", "12:59", datetime(2027, 3, 28, 10, 59, tzinfo=UTC)),  # past today; CEST tomorrow
    ("Europe/Rome", "13:00", None),  # this very minute: now
])
async def test_local_time_is_read_in_the_users_timezone(client, acme, timezone, local, expected):
    r = await client.put("/v1/users/u1", json={"timezone": timezone}, headers=acme["headers"])
    assert r.status_code in (200, 201)
    (n,) = (await send(client, acme, send_at={"local_time": local}))["items"]
    if expected is None:
        assert n["status"] == "sent" and n["send_at"] is None
    else:
        assert n["status"] == "scheduled" and n["send_at"] == iso(expected)


async def test_local_time_falls_back_to_the_apps_timezone_then_utc(client):
    tokyo = await create_app_with_key(client, "tokyo", defaults={"timezone": "Asia/Tokyo"})
    plain = await create_app_with_key(client, "plain")
    (a,) = (await send(client, tokyo, send_at={"local_time": "09:00"}))["items"]
    (b,) = (await send(client, plain, send_at={"local_time": "13:30"}))["items"]
    assert a["send_at"] == iso(datetime(2027, 3, 28, 0, 0, tzinfo=UTC))
    assert b["send_at"] == iso(datetime(2027, 3, 27, 13, 30, tzinfo=UTC))


async def test_one_request_schedules_each_user_at_their_own_nine(client, acme):
    for user, tz in (("rome", "Europe/Rome"), ("tokyo", "Asia/Tokyo"), ("none", None)):
        await client.put(f"/v1/users/{user}", json={"timezone": tz}, headers=acme["headers"])
    items = (await send(client, acme, to={"user_ids": ["rome", "tokyo", "none"]},
                        send_at={"local_time": "09:00"}))["items"]
    assert {n["user_id"]: n["send_at"] for n in items} == {
        "rome": iso(datetime(2027, 3, 28, 7, 0, tzinfo=UTC)),  # CEST from that morning
        "tokyo": iso(datetime(2027, 3, 28, 0, 0, tzinfo=UTC)),
        "none": iso(datetime(2027, 3, 28, 9, 0, tzinfo=UTC)),
    }


async def test_a_send_at_now_or_just_past_goes_at_once(client, acme):
    (n,) = (await send(client, acme, send_at=iso(NOW - timedelta(seconds=30))))["items"]
    assert n["status"] != "scheduled" and n["send_at"] is None


async def test_cancel_a_scheduled_notification(client, acme, container, clock):
    (n,) = (await send(client, acme, send_at=iso(NOW + timedelta(minutes=1))))["items"]
    h = acme["headers"]
    assert (await client.delete(f"/v1/notifications/{n['id']}", headers=h)).status_code == 204
    assert (await client.delete(f"/v1/notifications/{n['id']}", headers=h)).status_code == 204
    got = (await client.get(f"/v1/notifications/{n['id']}", headers=h)).json()
    assert got["status"] == "canceled" and got["deliveries"] == []
    clock.advance(120)
    assert await container.scheduler.fire_due() == 0
    assert (await inbox(client, acme))["items"] == []
    (sent,) = (await send(client, acme))["items"]
    r = await client.delete(f"/v1/notifications/{sent['id']}", headers=h)
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert (await client.delete("/v1/notifications/01JD0000000000000000000000",
                                headers=h)).status_code == 404


async def test_another_apps_scheduled_notification_cannot_be_canceled(client, acme, globex):
    (n,) = (await send(client, acme, send_at=iso(NOW + timedelta(minutes=1))))["items"]
    r = await client.delete(f"/v1/notifications/{n['id']}", headers=globex["headers"])
    assert r.status_code == 404
    got = (await client.get(f"/v1/notifications/{n['id']}", headers=acme["headers"])).json()
    assert got["status"] == "scheduled"


async def test_read_all_leaves_scheduled_notifications_alone(client, acme, container, clock):
    (n,) = (await send(client, acme, channels=["in_app"],
                       send_at=iso(NOW + timedelta(minutes=1))))["items"]
    await send(client, acme, channels=["in_app"])
    r = await client.post("/v1/users/u1/notifications/read-all", headers=acme["headers"])
    assert r.json() == {"updated": 1}
    clock.advance(60)
    await container.scheduler.fire_due()
    listed = await inbox(client, acme)
    assert listed["unread_count"] == 1
    assert [i["id"] for i in listed["items"] if i["read_at"] is None] == [n["id"]]


@pytest.mark.parametrize(("send_at", "field"), [
    ({"local_time": "9:00"}, "send_at"),
    ({"local_time": "24:00"}, "send_at"),
    ({"local_time": "09:00", "extra": 1}, "send_at"),
    ("2027-03-27T11:58:00Z", "send_at"),  # two minutes ago
    ("2027-03-27T13:00:00", "send_at"),  # no offset
    ("2029-03-27T13:00:00Z", "send_at"),  # two years ahead
    ("tomorrow", "send_at"),
])
async def test_bad_send_at_is_422(client, acme, send_at, field):
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x",
                                                     "send_at": send_at}, headers=acme["headers"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()
    assert (await inbox(client, acme))["items"] == []


async def test_an_unknown_timezone_is_422(client, acme):
    r = await client.put("/v1/users/u1", json={"timezone": "Mars/Olympus"}, headers=acme["headers"])
    assert r.status_code == 422
    r = await client.put("/v1/apps/acme", json={"defaults": {"timezone": "Europe/Atlantis"}},
                         headers={"Authorization": "Bearer tda_test-admin-key-0123456789abcdef"})
    assert r.status_code == 422


async def test_scheduled_raw_address_send_fires(client, acme, container, clock):
    (n,) = (await send(client, acme, to={"phone": "+393331234567"}, body="hi",
                       send_at=iso(NOW + timedelta(minutes=1))))["items"]
    clock.advance(61)
    assert await container.scheduler.fire_due() == 1
    got = (await client.get(f"/v1/notifications/{n['id']}", headers=acme["headers"])).json()
    assert [(d["channel"], d["target"], d["status"]) for d in got["deliveries"]] == [
        ("sms", "+393331234567", "pending")]
