"""Broadcasts: to a topic, a segment or everyone; expanded in resumable batches; progress;
cancel; scheduled and local-time broadcasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import ADMIN, drain, make_settings
from tidings.domain.ids import new_id

NOW = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings():
    return make_settings(broadcast_batch_size=10)


@pytest.fixture(autouse=True)
def _fixed_now(clock):
    clock.current = NOW


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def users(client, app, n, prefix="u", **profile):
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    for uid in ids:
        r = await client.put(f"/v1/users/{uid}", json=profile, headers=app["headers"])
        assert r.status_code in (200, 201), r.text
    return ids


async def topic(client, app, key, members):
    r = await client.put(f"/v1/topics/{key}", json={}, headers=app["headers"])
    assert r.status_code in (200, 201), r.text
    for uid in members:
        r = await client.put(f"/v1/topics/{key}/subscribers/{uid}", headers=app["headers"])
        assert r.status_code in (200, 201), r.text


async def broadcast(client, app, expect=202, headers=None, **body):
    body.setdefault("title", "News")
    r = await client.post("/v1/broadcasts", json=body, headers={**app["headers"], **(headers or {})})
    assert r.status_code == expect, r.text
    return r.json()


async def get(client, app, bid):
    r = await client.get(f"/v1/broadcasts/{bid}", headers=app["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def inbox_titles(client, app, uid):
    r = await client.get(f"/v1/users/{uid}/notifications", headers=app["headers"])
    return [n["title"] for n in r.json()["items"]]


async def expand(container):
    while await container.broadcasts.run_once():
        pass


async def test_a_topic_broadcast_reaches_every_subscriber_once(client, acme, container):
    members = await users(client, acme, 25)
    await users(client, acme, 3, prefix="outsider")
    await topic(client, acme, "news", members)
    for uid in members[:5]:
        await client.post(f"/v1/users/{uid}/devices", json={"platform": "android",
                                                            "token": f"tok-{uid}"},
                          headers=acme["headers"])
    b = await broadcast(client, acme, to={"topic": "news"}, channels=["push", "in_app"])
    assert b["status"] == "queued" and b["recipients"] is None and b["expanded"] == 0
    await expand(container)
    done = await get(client, acme, b["id"])
    assert done["status"] == "completed" and done["recipients"] == 25 and done["expanded"] == 25
    assert sum(done["statuses"].values()) == 25
    assert done["queued"] == 5 and done["failed"] == 0  # five wait on their push
    for uid in members:
        assert await inbox_titles(client, acme, uid) == ["News"]
    assert await inbox_titles(client, acme, "outsider000") == []
    await drain(container)
    done = await get(client, acme, b["id"])
    assert done["sent"] == 25 and done["queued"] == 0


async def test_a_segment_broadcast_reaches_only_the_segment(client, acme, container):
    pro = await users(client, acme, 12, prefix="pro", attributes={"plan": "pro", "seats": 5})
    await users(client, acme, 7, prefix="free", attributes={"plan": "free"})
    b = await broadcast(client, acme, to={"segment": {"attributes.plan": "pro",
                                                      "attributes.seats": {"$gte": 2}}},
                        channels=["in_app"])
    await expand(container)
    done = await get(client, acme, b["id"])
    assert done["status"] == "completed" and done["recipients"] == 12
    assert await inbox_titles(client, acme, pro[0]) == ["News"]
    assert await inbox_titles(client, acme, "free000") == []


async def test_a_broadcast_to_all_stays_in_its_app(client, acme, globex, container):
    await users(client, acme, 11)
    await users(client, globex, 4, prefix="g")
    b = await broadcast(client, acme, to={"all": True}, channels=["in_app"])
    await expand(container)
    assert (await get(client, acme, b["id"]))["recipients"] == 11
    assert await inbox_titles(client, globex, "g000") == []
    r = await client.get(f"/v1/broadcasts/{b['id']}", headers=globex["headers"])
    assert r.status_code == 404
    r = await client.delete(f"/v1/broadcasts/{b['id']}", headers=globex["headers"])
    assert r.status_code == 404


async def test_a_crash_mid_expansion_neither_loses_nor_doubles(client, acme, container, clock,
                                                              monkeypatch):
    members = await users(client, acme, 35)
    await topic(client, acme, "news", members)
    b = await broadcast(client, acme, to={"topic": "news"}, channels=["in_app"])
    store = container.store
    real = store.transaction
    batches = {"n": 0}

    def crashing():
        batches["n"] += 1
        if batches["n"] == 4:  # the claim, two batches, then the worker dies in the third
            raise RuntimeError("worker killed")
        return real()

    monkeypatch.setattr(store, "transaction", crashing)
    with pytest.raises(RuntimeError):
        await container.broadcasts.run_once()
    monkeypatch.setattr(store, "transaction", real)
    half = await get(client, acme, b["id"])
    assert half["status"] == "expanding" and half["expanded"] == 20
    assert await container.broadcasts.run_once() == 0  # the dead worker's lease still holds
    clock.advance(61)
    await expand(container)
    done = await get(client, acme, b["id"])
    assert done["status"] == "completed" and done["expanded"] == 35
    assert sum(done["statuses"].values()) == 35
    for uid in members:
        assert await inbox_titles(client, acme, uid) == ["News"], uid


async def test_a_worker_that_lost_its_lease_writes_nothing(client, acme, container, clock):
    members = await users(client, acme, 15)
    await topic(client, acme, "news", members)
    b = await broadcast(client, acme, to={"topic": "news"}, channels=["in_app"])
    async with container.store.transaction() as tx:
        stale = await tx.broadcasts.claim(clock.now(), 60, new_id())
    assert stale is not None
    clock.advance(61)
    await expand(container)  # another worker takes over and finishes
    stale.expanded, stale.cursor = 99, "u999"
    async with container.store.transaction() as tx:
        assert not await tx.broadcasts.advance(stale, "a-lease-nobody-holds", clock.now())
    assert (await get(client, acme, b["id"]))["expanded"] == 15


async def test_cancel_stops_the_expansion_and_skips_what_was_not_sent(client, acme, container,
                                                                      monkeypatch):
    members = await users(client, acme, 30)
    await topic(client, acme, "news", members)
    for uid in members:
        await client.post(f"/v1/users/{uid}/devices", json={"platform": "android",
                                                            "token": f"tok-{uid}"},
                          headers=acme["headers"])
    b = await broadcast(client, acme, to={"topic": "news"}, channels=["push"])
    real = container.store.transaction
    calls = {"n": 0}

    def one_batch_then_stop():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return real()

    monkeypatch.setattr(container.store, "transaction", one_batch_then_stop)
    with pytest.raises(RuntimeError):
        await container.broadcasts.run_once()
    monkeypatch.setattr(container.store, "transaction", real)
    r = await client.delete(f"/v1/broadcasts/{b['id']}", headers=acme["headers"])
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    await expand(container)  # the sweep
    assert await drain(container) == 0  # nothing left to send
    done = await get(client, acme, b["id"])
    assert done["status"] == "canceled" and done["expanded"] == 10
    assert done["statuses"] == {"canceled": 10} and done["canceled"] == 10
    unread = (await client.get(f"/v1/users/{members[0]}/notifications",
                               headers=acme["headers"])).json()["unread_count"]
    assert unread == 0  # it left the inbox, and the count with it
    rows = await delivery_rows(container.store)
    assert {tuple(r) for r in rows} == {("skipped", "the broadcast was canceled")}
    assert len(rows) == 10
    # Canceled before anything went out: not in anyone's inbox.
    assert await inbox_titles(client, acme, members[0]) == []
    assert await inbox_titles(client, acme, members[-1]) == []
    again = await client.delete(f"/v1/broadcasts/{b['id']}", headers=acme["headers"])
    assert again.status_code == 200 and again.json()["status"] == "canceled"


async def test_a_broadcast_at_an_instant_expands_then(client, acme, container, clock):
    await users(client, acme, 3)
    at = NOW + timedelta(minutes=30)
    b = await broadcast(client, acme, to={"all": True}, channels=["in_app"], send_at=iso(at))
    assert b["status"] == "scheduled" and b["send_at"] == iso(at)
    assert await container.broadcasts.run_once() == 0
    await users(client, acme, 2, prefix="late")  # joined before it goes: included
    clock.current = at
    await expand(container)
    assert (await get(client, acme, b["id"]))["recipients"] == 5


async def test_a_local_time_broadcast_goes_at_nine_in_each_timezone(client, acme, container,
                                                                    clock):
    await users(client, acme, 3, prefix="tokyo", timezone="Asia/Tokyo")
    await users(client, acme, 3, prefix="rome", timezone="Europe/Rome")
    b = await broadcast(client, acme, to={"all": True}, channels=["in_app"],
                        send_at={"local_time": "09:00"})
    assert b["local_time"] == "09:00"
    await expand(container)
    done = await get(client, acme, b["id"])
    assert done["status"] == "completed" and done["scheduled"] == 6
    assert await inbox_titles(client, acme, "tokyo000") == []
    clock.current = datetime(2027, 3, 28, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo, 01:00 in Rome
    assert await container.scheduler.fire_due() == 3
    assert await inbox_titles(client, acme, "tokyo000") == ["News"]
    assert await inbox_titles(client, acme, "rome000") == []
    clock.current = datetime(2027, 3, 28, 7, 0, tzinfo=UTC)  # 09:00 CEST
    assert await container.scheduler.fire_due() == 3
    assert (await get(client, acme, b["id"]))["scheduled"] == 0


async def test_cancel_a_local_time_broadcast_cancels_its_scheduled_notifications(
        client, acme, container, clock):
    await users(client, acme, 4, timezone="Asia/Tokyo")
    b = await broadcast(client, acme, to={"all": True}, channels=["in_app"],
                        send_at={"local_time": "09:00"})
    await expand(container)
    await client.delete(f"/v1/broadcasts/{b['id']}", headers=acme["headers"])
    await expand(container)
    assert (await get(client, acme, b["id"]))["canceled"] == 4
    clock.current = datetime(2027, 3, 28, 0, 0, tzinfo=UTC)
    assert await container.scheduler.fire_due() == 0


async def test_broadcasts_obey_preferences(client, acme, container):
    members = await users(client, acme, 3)
    await topic(client, acme, "news", members)
    r = await client.put(f"/v1/users/{members[0]}/preferences",
                         json={"categories": {"promo": {"enabled": False}}},
                         headers=acme["headers"])
    assert r.status_code == 200
    b = await broadcast(client, acme, to={"topic": "news"}, channels=["in_app"],
                        category="promo")
    await expand(container)
    assert (await get(client, acme, b["id"]))["statuses"] == {"failed": 1, "sent": 2}
    assert await inbox_titles(client, acme, members[0]) == ["News"]  # history, not the feed


async def test_the_same_idempotency_key_makes_one_broadcast(client, acme):
    key = {"Idempotency-Key": "launch-1"}
    a = await broadcast(client, acme, headers=key, to={"all": True})
    b = await broadcast(client, acme, headers=key, to={"all": True})
    assert a["id"] == b["id"]
    listed = (await client.get("/v1/broadcasts", headers=acme["headers"])).json()
    assert [x["id"] for x in listed["items"]] == [a["id"]]
    await broadcast(client, acme, expect=409, headers=key, to={"all": True}, title="other")


def _deep(levels: int) -> dict:
    node: dict = {"locale": "it"}
    for _ in range(levels):
        node = {"$or": [node]}
    return node


DEEP = _deep(9)


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"to": {"topic": "nope"}}, 404, None),
    ({"to": {"topic": "bad key!"}}, 422, "to"),
    ({"to": {"all": True, "topic": "news"}}, 422, "to"),
    ({"to": {"all": False}}, 422, "to"),
    ({"to": {}}, 422, "to"),
    ({"to": {"segment": {"attributes.plan": {"$regex": "p"}}}}, 422, "to.segment"),
    ({"to": {"segment": {"attributes.seats": {"$gt": [1]}}}}, 422, "to.segment"),
    ({"to": {"segment": DEEP}}, 422, "to.segment"),
    ({"to": {"all": True}, "send_at": {"local_time": "25:00"}}, 422, "send_at"),
    ({"to": {"all": True}, "send_at": "2027-03-27T11:00:00Z"}, 422, "send_at"),
    ({"to": {"all": True}, "title": None, "body": None}, 422, None),
])
async def test_bad_broadcasts_are_refused_and_write_nothing(client, acme, body, status, field):
    r = await client.post("/v1/broadcasts", json={"title": "x", **body}, headers=acme["headers"])
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    if field:
        assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()
    listed = (await client.get("/v1/broadcasts", headers=acme["headers"])).json()
    assert listed["items"] == []


async def test_a_user_token_cannot_broadcast(client, acme):
    r = await client.post("/v1/users/u1/tokens", headers=acme["headers"])
    token = {"Authorization": f"Bearer {r.json()['token']}"}
    r = await client.post("/v1/broadcasts", json={"to": {"all": True}, "title": "x"},
                          headers=token)
    assert r.status_code in (401, 403)


async def test_deleting_the_app_removes_its_broadcasts(client, acme, container):
    await users(client, acme, 2)
    await broadcast(client, acme, to={"all": True})
    r = await client.delete("/v1/apps/acme", headers=ADMIN)
    assert r.status_code == 204
    assert await container.broadcasts.run_once() == 0


async def delivery_rows(store: Any) -> list[tuple[str, str | None]]:
    """(status, error) of every delivery in the store."""
    if hasattr(store, "dialect"):
        async with store.reader() as tx:
            rows = await tx.connection.execute(text("SELECT status, error FROM deliveries"))
            return [(r[0], r[1]) for r in rows]
    client = await store.table.client()
    out = []
    async for page in client.get_paginator("scan").paginate(TableName=store.table.name):
        out += [(i["status"]["S"], i.get("error", {}).get("S")) for i in page["Items"]
                if i["sk"]["S"].startswith("D#")]
    return out
