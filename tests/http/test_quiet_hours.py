"""Quiet hours: push and SMS inside the user's (or the app's) window wait for its end, in the
user's timezone; in-app and e-mail go; `priority: "high"` goes anyway."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import ADMIN, drain

# 23:30 in Rome (CET, UTC+1) on a winter night.
LATE = datetime(2027, 1, 15, 22, 30, tzinfo=UTC)
MORNING = datetime(2027, 1, 16, 6, 0, tzinfo=UTC)  # 07:00 in Rome


@pytest.fixture(autouse=True)
def _late_evening(clock):
    clock.current = LATE


async def night_owl(client, app, user="u1", **profile):
    body = {"timezone": "Europe/Rome", "phone": "+393331234567", "email": "a@example.com",
            **profile}
    r = await client.put(f"/v1/users/{user}", json=body, headers=app["headers"])
    assert r.status_code in (200, 201), r.text
    r = await client.post(f"/v1/users/{user}/devices", json={"platform": "android",
                                                             "token": f"tok-{user}"},
                          headers=app["headers"])
    assert r.status_code in (200, 201), r.text


async def send(client, app, user="u1", **body):
    body.setdefault("title", "Hello")
    body.setdefault("channels", ["push", "sms", "in_app", "email"])
    r = await client.post("/v1/notifications", json={"to": {"user_id": user}, **body},
                          headers=app["headers"])
    assert r.status_code == 202, r.text
    return r.json()["items"][0]


async def statuses(client, app, n):
    doc = (await client.get(f"/v1/notifications/{n['id']}", headers=app["headers"])).json()
    return {d["channel"]: d["status"] for d in doc["deliveries"]}


async def test_the_users_quiet_hours_hold_push_and_sms_until_they_end(client, acme, container,
                                                                      clock):
    await night_owl(client, acme, quiet_hours={"start": "22:00", "end": "07:00"})
    profile = (await client.get("/v1/users/u1", headers=acme["headers"])).json()
    assert profile["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    n = await send(client, acme)
    await drain(container)
    assert await statuses(client, acme, n) == {"push": "pending", "sms": "pending",
                                               "in_app": "sent", "email": "sent"}
    clock.current = datetime(2027, 1, 16, 5, 59, tzinfo=UTC)
    await drain(container)
    assert (await statuses(client, acme, n))["push"] == "pending"  # 06:59 in Rome
    clock.current = MORNING
    await drain(container)
    assert await statuses(client, acme, n) == dict.fromkeys(["push", "sms", "in_app", "email"],
                                                           "sent")


async def test_high_priority_goes_through_quiet_hours(client, acme, container):
    await night_owl(client, acme, quiet_hours={"start": "22:00", "end": "07:00"})
    n = await send(client, acme, priority="high")
    await drain(container)
    assert set((await statuses(client, acme, n)).values()) == {"sent"}


async def test_outside_the_window_nothing_waits(client, acme, container, clock):
    await night_owl(client, acme, quiet_hours={"start": "01:00", "end": "06:00"})
    n = await send(client, acme)
    await drain(container)
    assert set((await statuses(client, acme, n)).values()) == {"sent"}


async def test_the_apps_quiet_hours_apply_to_users_without_their_own(client, container, clock):
    from tests.conftest import create_app_with_key

    app = await create_app_with_key(client, "calm", defaults={
        "quiet_hours": {"start": "23:00", "end": "08:00"},
        "quiet_hours_channels": ["push", "email"]})
    await night_owl(client, app, user="plain")
    await night_owl(client, app, user="own", quiet_hours={"start": "21:00", "end": "22:00"})
    held = await send(client, app, user="plain")
    free = await send(client, app, user="own")
    await drain(container)
    assert await statuses(client, app, held) == {"push": "pending", "sms": "sent",
                                                 "in_app": "sent", "email": "pending"}
    assert set((await statuses(client, app, free)).values()) == {"sent"}
    clock.current = datetime(2027, 1, 16, 7, 0, tzinfo=UTC)  # 08:00 in Rome
    await drain(container)
    assert set((await statuses(client, app, held)).values()) == {"sent"}


async def test_clearing_the_users_window_stops_holding(client, acme, container):
    await night_owl(client, acme, quiet_hours={"start": "22:00", "end": "07:00"})
    r = await client.put("/v1/users/u1", json={"quiet_hours": None}, headers=acme["headers"])
    assert r.status_code == 200 and r.json()["quiet_hours"] is None
    n = await send(client, acme)
    await drain(container)
    assert set((await statuses(client, acme, n)).values()) == {"sent"}


@pytest.mark.parametrize("quiet", [
    {"start": "22:00"},
    {"start": "22:00", "end": "22:00"},
    {"start": "10pm", "end": "07:00"},
    {"start": "22:00", "end": "07:00", "days": "weekdays"},
    "22:00-07:00",
])
async def test_bad_quiet_hours_are_422(client, acme, quiet):
    r = await client.put("/v1/users/u1", json={"quiet_hours": quiet}, headers=acme["headers"])
    assert r.status_code == 422, r.text
    r = await client.put("/v1/apps/acme", json={"defaults": {"quiet_hours": quiet}}, headers=ADMIN)
    assert r.status_code == 422, r.text


async def test_a_send_whose_ttl_ends_in_quiet_hours_is_skipped_not_held(client, acme, container):
    await night_owl(client, acme, quiet_hours={"start": "22:00", "end": "07:00"})
    n = await send(client, acme, channels=["push", "in_app"], ttl=300)
    doc = (await client.get(f"/v1/notifications/{n['id']}", headers=acme["headers"])).json()
    push = next(d for d in doc["deliveries"] if d["channel"] == "push")
    assert push["status"] == "skipped" and "quiet hours" in push["error"]
