"""The audience of a segment, previewed over HTTP: `GET /v1/users?filter=...&count=true`."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import user_token


async def put_users(client, app: dict[str, Any], people: dict[str, dict[str, Any]]) -> None:
    for user_id, body in people.items():
        r = await client.put(f"/v1/users/{user_id}", json=body, headers=app["headers"])
        assert r.status_code == 201, r.text


PEOPLE = {
    "ada": {"locale": "it", "timezone": "Europe/Rome",
            "attributes": {"plan": "pro", "seats": 12, "tags": ["beta", "vip"], "address": {"city": "Rome"}}},
    "bob": {"locale": "en", "attributes": {"plan": "free", "seats": 1, "tags": []}},
    "cyd": {"locale": "it", "attributes": {"plan": "pro", "seats": "12", "address": {"city": "Milan"}}},
    "dan": {"attributes": {"plan": "team", "seats": 40, "beta": True}},
}


async def preview(client, app, doc: Any = None, **params: Any) -> Any:
    if doc is not None:
        params["filter"] = doc if isinstance(doc, str) else json.dumps(doc)
    return await client.get("/v1/users", params=params, headers=app["headers"])


def ids(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [u["id"] for u in r.json()["items"]]


async def test_filter_selects_the_audience(client, acme):
    await put_users(client, acme, PEOPLE)
    assert ids(await preview(client, acme, {"attributes.plan": "pro"})) == ["ada", "cyd"]
    assert ids(await preview(client, acme, {"attributes.seats": {"$gte": 10}})) == ["ada", "dan"]
    assert ids(await preview(client, acme, {"attributes.tags": "vip"})) == ["ada"]
    assert ids(await preview(client, acme, {"attributes.address.city": {"$in": ["Rome", "Milan"]}})) == ["ada", "cyd"]
    assert ids(await preview(client, acme, {"$or": [{"locale": "en"}, {"attributes.beta": True}]})) == ["bob", "dan"]
    assert ids(await preview(client, acme, {"attributes.plan": {"$ne": "pro"}, "locale": {"$exists": True}})) == ["bob"]
    assert ids(await preview(client, acme, {"created_at": {"$gte": "2000-01-01T00:00:00Z"}})) == list(PEOPLE)
    assert ids(await preview(client, acme, {})) == list(PEOPLE)


async def test_count_adds_the_total_and_pages_keep_the_filter(client, acme):
    await put_users(client, acme, PEOPLE)
    r = await preview(client, acme, {"locale": "it"}, count="true", limit=1)
    body = r.json()
    assert [u["id"] for u in body["items"]] == ["ada"] and body["total"] == 2
    r = await preview(client, acme, {"locale": "it"}, count="true", limit=1, cursor=body["next_cursor"])
    assert ids(r) == ["cyd"] and r.json()["total"] == 2 and r.json()["next_cursor"] is None
    r = await preview(client, acme, {"attributes.plan": "none"}, count="true")
    assert r.json() == {"items": [], "next_cursor": None, "total": 0}
    assert "total" not in (await preview(client, acme, {"locale": "it"})).json()
    assert (await preview(client, acme, count="true")).json()["total"] == 4
    assert (await preview(client, acme, count="maybe")).status_code == 422


async def test_filter_and_attribute_params_must_both_hold(client, acme):
    await put_users(client, acme, PEOPLE)
    assert ids(await preview(client, acme, **{"attribute.seats": "12"})) == ["ada", "cyd"]
    assert ids(await preview(client, acme, {"locale": "it"}, **{"attribute.seats": "12"})) == ["ada", "cyd"]
    r = await preview(client, acme, {"attributes.address.city": "Milan"}, count="true",
                      **{"attribute.seats": "12", "attribute.plan": "pro"})
    assert ids(r) == ["cyd"] and r.json()["total"] == 1


async def test_attributes_changed_or_removed_leave_the_segment(client, acme):
    await put_users(client, acme, PEOPLE)
    h = acme["headers"]
    assert (await client.put("/v1/users/ada", json={"attributes": {"plan": "free"}}, headers=h)).status_code == 200
    assert ids(await preview(client, acme, {"attributes.plan": "pro"})) == ["cyd"]
    assert ids(await preview(client, acme, {"attributes.tags": {"$exists": True}})) == ["bob"]
    assert (await client.delete("/v1/users/cyd", headers=h)).status_code == 204
    r = await preview(client, acme, {"attributes.plan": "pro"}, count="true")
    assert ids(r) == [] and r.json()["total"] == 0


async def test_bad_filters_are_422_naming_the_problem(client, acme):
    for doc, field in [
        ("{not json", "filter"),
        ("", "filter"),
        ('["attributes.plan"]', "filter"),
        ('"pro"', "filter"),
        ({"attributes.plan": {"$regex": "^p"}}, "filter.attributes.plan.$regex"),
        ({"name": "ada"}, "filter.name"),
        ({"attributes.plan": None}, "filter.attributes.plan"),
        ({"$or": [{"locale": "it"}, {"attributes.seats": {"$gt": True}}]}, "filter.$or[1].attributes.seats.$gt"),
        ({"created_at": {"$gt": "last week"}}, "filter.created_at.$gt"),
        ({"attributes.tags": {"$in": "vip"}}, "filter.attributes.tags.$in"),
    ]:
        r = await preview(client, acme, doc)
        assert r.status_code == 422, (doc, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == field, (doc, r.json())


async def test_another_apps_users_never_appear(client, acme, globex):
    await put_users(client, acme, PEOPLE)
    await put_users(client, globex, {"eve": {"locale": "it", "attributes": {"plan": "pro"}}})
    r = await preview(client, globex, {"attributes.plan": "pro"}, count="true")
    assert ids(r) == ["eve"] and r.json()["total"] == 1
    r = await preview(client, acme, {"$or": [{"attributes.plan": "pro"}, {"locale": "it"}]}, count="true")
    assert ids(r) == ["ada", "cyd"] and r.json()["total"] == 2
    r = await preview(client, acme, {"attributes.plan": {"$ne": "pro"}}, count="true")
    assert ids(r) == ["bob", "dan"] and r.json()["total"] == 2


async def test_a_user_token_cannot_preview(client, acme):
    await put_users(client, acme, PEOPLE)
    me = await user_token(client, acme, "ada")
    r = await client.get("/v1/users", params={"filter": json.dumps({"attributes.plan": "pro"})}, headers=me)
    assert r.status_code in (403, 404)
