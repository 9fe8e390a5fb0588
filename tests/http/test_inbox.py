"""The inbox over HTTP: pages, filters, unread counts, reading."""

from __future__ import annotations

import asyncio

from tests.conftest import user_token


async def send(client, app, title, channels=("in_app",), user="u1"):
    r = await client.post("/v1/notifications", json={"to": {"user_id": user}, "title": title,
                                                     "channels": list(channels)}, headers=app["headers"])
    assert r.status_code == 202, r.text
    return r.json()["items"][0]


async def test_pages_newest_first_with_unread_count(client, acme, clock):
    sent = []
    for i in range(7):
        sent.append(await send(client, acme, f"n{i}", ("in_app",) if i % 3 else ("push",)))
        clock.advance(1)
    me = await user_token(client, acme, "u1")
    page = (await client.get("/v1/users/me/notifications", params={"limit": 3}, headers=me)).json()
    assert [n["title"] for n in page["items"]] == ["n6", "n5", "n4"] and page["unread_count"] == 7
    nxt = (await client.get("/v1/users/me/notifications",
                            params={"limit": 3, "cursor": page["next_cursor"]}, headers=me)).json()
    assert [n["title"] for n in nxt["items"]] == ["n3", "n2", "n1"]
    in_app = (await client.get("/v1/users/u1/notifications", params={"channel": "in_app"},
                               headers=acme["headers"])).json()
    assert [n["title"] for n in in_app["items"]] == ["n5", "n4", "n2", "n1"]
    assert in_app["unread_count"] == 4 and in_app["next_cursor"] is None
    since = sent[4]["created_at"]
    ranged = (await client.get("/v1/users/me/notifications", params={"since": since}, headers=me)).json()
    assert [n["title"] for n in ranged["items"]] == ["n6", "n5", "n4"]
    assert ranged["unread_count"] == 7  # the time range does not narrow the count
    until = sent[2]["created_at"]
    older = (await client.get("/v1/users/me/notifications", params={"until": until}, headers=me)).json()
    assert [n["title"] for n in older["items"]] == ["n1", "n0"]


async def test_read_one_and_all(client, acme):
    a = await send(client, acme, "a")
    await send(client, acme, "b", ("push",))
    await send(client, acme, "c")
    me = await user_token(client, acme, "u1")
    r = await client.post(f"/v1/users/me/notifications/{a['id']}/read", headers=me)
    assert r.status_code == 200 and r.json()["read_at"]
    again = await client.post(f"/v1/users/me/notifications/{a['id']}/read", headers=me)
    assert again.json()["read_at"] == r.json()["read_at"]
    unread = (await client.get("/v1/users/me/notifications", params={"unread": "true"}, headers=me)).json()
    assert [n["title"] for n in unread["items"]] == ["c", "b"] and unread["unread_count"] == 2
    r = await client.post("/v1/users/me/notifications/read-all", json={"channel": "in_app"}, headers=me)
    assert r.json() == {"updated": 1}
    r = await client.post("/v1/users/me/notifications/read-all", headers=me)
    assert r.json() == {"updated": 1}
    assert (await client.get("/v1/users/me/notifications", headers=me)).json()["unread_count"] == 0


async def test_concurrent_reads_of_one_notification_all_succeed(client, acme):
    """Two devices of the user mark the same notification read at once: both get it, read
    once, with one read time, and the unread count drops by one."""
    a = await send(client, acme, "a")
    await send(client, acme, "b")
    me = await user_token(client, acme, "u1")
    answers = await asyncio.gather(*(client.post(f"/v1/users/me/notifications/{a['id']}/read",
                                                 headers=me) for _ in range(4)))
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert len({r.json()["read_at"] for r in answers}) == 1
    assert (await client.get("/v1/users/me/notifications", headers=me)).json()["unread_count"] == 1


async def test_someone_elses_notification_is_not_found(client, acme):
    other = await send(client, acme, "private", user="bob")
    me = await user_token(client, acme, "u1")
    r = await client.post(f"/v1/users/me/notifications/{other['id']}/read", headers=me)
    assert r.status_code == 404
    r = await client.get("/v1/users/bob/notifications", headers=me)
    assert r.status_code == 404


async def test_bad_queries(client, acme):
    h = acme["headers"]
    for params in ({"channel": "fax"}, {"limit": 0}, {"limit": 201}, {"cursor": "%%%"},
                   {"since": "yesterday"}, {"since": "2026-11-21T10:00:00Z", "until": "2026-11-21T09:00:00Z"}):
        r = await client.get("/v1/users/u1/notifications", params=params, headers=h)
        assert r.status_code == 422, params
        assert r.headers["content-type"] == "application/problem+json"


async def test_cancel_needs_a_scheduled_notification(client, acme):
    n = await send(client, acme, "now")
    r = await client.delete(f"/v1/notifications/{n['id']}", headers=acme["headers"])
    assert r.status_code == 409 and "scheduled" in r.json()["detail"]
    r = await client.delete("/v1/notifications/01M7Y6Y2327WN1CRD5G5K9FTWM", headers=acme["headers"])
    assert r.status_code == 404


async def test_deliveries_only_on_request(client, acme):
    await send(client, acme, "hello", ("push", "in_app"))
    plain = (await client.get("/v1/users/u1/notifications", headers=acme["headers"])).json()
    assert "deliveries" not in plain["items"][0]
    full = (await client.get("/v1/users/u1/notifications", params={"include": "deliveries"},
                             headers=acme["headers"])).json()
    assert sorted(d["channel"] for d in full["items"][0]["deliveries"]) == ["in_app", "push"]
    r = await client.get("/v1/users/u1/notifications", params={"include": "secrets"},
                         headers=acme["headers"])
    assert r.status_code == 422
