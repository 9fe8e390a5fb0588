"""Topics over HTTP (API.md, Topics): the app's backend manages topics and subscribes any user;
a user token subscribes only itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import user_token
from tidings.bootstrap import Container
from tidings.entrypoints.http.app import create_app


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """An unhandled error comes back as the 500 a real client sees, not as an exception."""
    transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


def problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    if field is not None:
        assert [e["field"] for e in doc["errors"]] == [field], doc
    return doc


async def make_topic(client, app, key="news", **body) -> dict[str, Any]:
    r = await client.put(f"/v1/topics/{key}", json=body or None, headers=app["headers"])
    assert r.status_code == 201, r.text
    return r.json()


async def subscribe(client, headers, key="news", user="u1") -> httpx.Response:
    return await client.put(f"/v1/topics/{key}/subscribers/{user}", headers=headers)


async def all_pages(client, path, headers, limit) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(path, params=params, headers=headers)
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages


async def test_put_get_list_delete(client, acme, clock):
    h = acme["headers"]
    created = await make_topic(client, acme, "news", name="News")
    assert created["key"] == "news" and created["name"] == "News"
    assert created["created_at"] == created["updated_at"] and created["created_at"].endswith("Z")

    clock.advance(60)
    r = await client.put("/v1/topics/news", json={"name": "Daily news"}, headers=h)
    assert r.status_code == 200
    assert r.json()["name"] == "Daily news" and r.json()["created_at"] == created["created_at"]
    assert r.json()["updated_at"] > created["updated_at"]
    r = await client.put("/v1/topics/news", headers=h)  # no body: the name is kept
    assert r.status_code == 200 and r.json()["name"] == "Daily news"
    r = await client.put("/v1/topics/news", json={}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Daily news"

    r = await client.get("/v1/topics/news", headers=h)
    assert r.status_code == 200
    assert r.json() == {"key": "news", "name": "Daily news", "subscribers": 0,
                        "created_at": created["created_at"], "updated_at": r.json()["updated_at"]}

    await make_topic(client, acme, "alerts")
    r = await client.get("/v1/topics", headers=h)
    assert r.status_code == 200
    assert [t["key"] for t in r.json()["items"]] == ["alerts", "news"]
    assert r.json()["next_cursor"] is None

    r = await client.put("/v1/topics/news", json={"name": None}, headers=h)
    assert r.status_code == 200 and r.json()["name"] is None

    r = await client.delete("/v1/topics/news", headers=h)
    assert r.status_code == 204 and r.content == b""
    problem(await client.get("/v1/topics/news", headers=h), 404)
    problem(await client.delete("/v1/topics/news", headers=h), 404)
    r = await client.get("/v1/topics", headers=h)
    assert [t["key"] for t in r.json()["items"]] == ["alerts"]


async def test_topic_body_is_validated(client, acme):
    h = acme["headers"]
    problem(await client.put("/v1/topics/news", json={"name": ""}, headers=h), 422, "name")
    problem(await client.put("/v1/topics/news", json={"name": "x" * 201}, headers=h), 422, "name")
    problem(await client.put("/v1/topics/news", json={"name": 5}, headers=h), 422, "name")
    problem(await client.put("/v1/topics/news", json={"nmae": "News"}, headers=h), 422)
    problem(await client.put("/v1/topics/news", json=["News"], headers=h), 422)
    r = await client.put("/v1/topics/news", content=b"{", headers={
        **h, "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    problem(await client.get("/v1/topics/news", headers=h), 404)  # nothing was written


@pytest.mark.parametrize("key", ["-news", "news!", "bad%20key", "x" * 129, "caf%C3%A9", "_x"])
async def test_bad_topic_keys_are_422(client, acme, key):
    h = acme["headers"]
    me = await user_token(client, acme, "ada")
    for r in (
        await client.put(f"/v1/topics/{key}", json={"name": "x"}, headers=h),
        await client.get(f"/v1/topics/{key}", headers=h),
        await client.delete(f"/v1/topics/{key}", headers=h),
        await client.put(f"/v1/topics/{key}/subscribers/u1", headers=h),
        await client.delete(f"/v1/topics/{key}/subscribers/u1", headers=h),
        await client.get(f"/v1/topics/{key}/subscribers", headers=h),
        await client.put(f"/v1/topics/{key}/subscribers/me", headers=me),
    ):
        problem(r, 422, "topic")


async def test_longest_and_punctuated_keys_are_fine(client, acme):
    for key in ("a" * 128, "Team.EU:ops_2-b", "7"):
        await make_topic(client, acme, key)
        assert (await subscribe(client, acme["headers"], key)).status_code == 201


async def test_unknown_topic_is_404(client, acme):
    h = acme["headers"]
    problem(await client.get("/v1/topics/ghost", headers=h), 404)
    problem(await client.delete("/v1/topics/ghost", headers=h), 404)
    problem(await subscribe(client, h, "ghost"), 404)
    problem(await client.delete("/v1/topics/ghost/subscribers/u1", headers=h), 404)
    problem(await client.get("/v1/topics/ghost/subscribers", headers=h), 404)
    # Subscribing to a topic that does not exist creates neither it nor the user.
    problem(await client.get("/v1/users/u1", headers=h), 404)
    assert (await client.get("/v1/topics", headers=h)).json()["items"] == []


async def test_subscribe_twice_unsubscribe_and_the_empty_profile(client, acme):
    h = acme["headers"]
    await make_topic(client, acme)
    r = await subscribe(client, h, user="u1")
    assert r.status_code == 201 and r.json() == {"topic": "news", "user_id": "u1"}
    r = await subscribe(client, h, user="u1")
    assert r.status_code == 200 and r.json() == {"topic": "news", "user_id": "u1"}

    profile = await client.get("/v1/users/u1", headers=h)
    assert profile.status_code == 200
    assert profile.json()["email"] is None and profile.json()["attributes"] == {}
    # An existing profile is left as it is.
    await client.put("/v1/users/u2", json={"email": "u2@example.com"}, headers=h)
    assert (await subscribe(client, h, user="u2")).status_code == 201
    assert (await client.get("/v1/users/u2", headers=h)).json()["email"] == "u2@example.com"

    assert (await client.get("/v1/topics/news", headers=h)).json()["subscribers"] == 2
    r = await client.delete("/v1/topics/news/subscribers/u1", headers=h)
    assert r.status_code == 204
    problem(await client.delete("/v1/topics/news/subscribers/u1", headers=h), 404)
    problem(await client.delete("/v1/topics/news/subscribers/nobody", headers=h), 404)
    assert (await client.get("/v1/topics/news", headers=h)).json()["subscribers"] == 1
    problem(await subscribe(client, h, user="x" * 257), 422, "user_id")


async def test_a_user_token_subscribes_itself(client, acme):
    h = acme["headers"]
    await make_topic(client, acme)
    await make_topic(client, acme, "sport")
    me = await user_token(client, acme, "ada")

    r = await subscribe(client, me, user="me")
    assert r.status_code == 201 and r.json() == {"topic": "news", "user_id": "ada"}
    assert (await subscribe(client, me, user="ada")).status_code == 200
    assert (await subscribe(client, me, "sport", user="me")).status_code == 201

    r = await client.get("/v1/users/me/topics", headers=me)
    assert r.status_code == 200
    assert [t["topic"] for t in r.json()["items"]] == ["news", "sport"]
    assert all(t["subscribed_at"].endswith("Z") for t in r.json()["items"])
    r = await client.get("/v1/topics/news/subscribers", headers=h)
    assert [s["user_id"] for s in r.json()["items"]] == ["ada"]

    r = await client.delete("/v1/topics/sport/subscribers/me", headers=me)
    assert r.status_code == 204
    r = await client.get("/v1/users/ada/topics", headers=h)
    assert [t["topic"] for t in r.json()["items"]] == ["news"]


async def test_a_user_token_reaches_no_other_user(client, acme):
    h = acme["headers"]
    await make_topic(client, acme)
    assert (await subscribe(client, h, user="bob")).status_code == 201
    me = await user_token(client, acme, "ada")
    problem(await subscribe(client, me, user="bob"), 404)
    problem(await client.delete("/v1/topics/news/subscribers/bob", headers=me), 404)
    problem(await client.get("/v1/users/bob/topics", headers=me), 404)
    # Nor the app's side of topics.
    problem(await client.put("/v1/topics/mine", headers=me), 403)
    problem(await client.get("/v1/topics", headers=me), 403)
    problem(await client.get("/v1/topics/news", headers=me), 403)
    problem(await client.delete("/v1/topics/news", headers=me), 403)
    problem(await client.get("/v1/topics/news/subscribers", headers=me), 403)
    r = await client.get("/v1/topics/news/subscribers", headers=h)
    assert [s["user_id"] for s in r.json()["items"]] == ["bob"]
    # `me` means a token's own user; the app's key names users by id.
    problem(await subscribe(client, h, user="me"), 400)


async def test_one_app_never_sees_another_apps_topics(client, acme, globex):
    a, g = acme["headers"], globex["headers"]
    await make_topic(client, acme, "news", name="Acme news")
    await make_topic(client, acme, "secret")
    assert (await subscribe(client, a, user="u1")).status_code == 201
    g_user = await user_token(client, globex, "u1")

    for path in ("/v1/topics/secret", "/v1/topics/nowhere"):
        problem(await client.get(path, headers=g), 404)
        problem(await client.get(f"{path}/subscribers", headers=g), 404)
        problem(await client.put(f"{path}/subscribers/u1", headers=g), 404)
        problem(await client.put(f"{path}/subscribers/me", headers=g_user), 404)
        problem(await client.delete(f"{path}/subscribers/u1", headers=g), 404)
        problem(await client.delete(path, headers=g), 404)
    assert (await client.get("/v1/topics", headers=g)).json()["items"] == []
    assert (await client.get("/v1/users/u1/topics", headers=g)).json()["items"] == []

    # The same key in globex is globex's own topic.
    r = await client.put("/v1/topics/news", json={"name": "Globex news"}, headers=g)
    assert r.status_code == 201
    assert (await client.get("/v1/topics/news", headers=a)).json()["name"] == "Acme news"
    assert (await client.get("/v1/topics/news", headers=g)).json()["subscribers"] == 0
    assert (await client.get("/v1/topics/news", headers=a)).json()["subscribers"] == 1


async def test_topics_page_by_key(client, acme):
    h = acme["headers"]
    keys = [f"t{i:02d}" for i in range(7)]
    for key in reversed(keys):
        await make_topic(client, acme, key)
    pages = await all_pages(client, "/v1/topics", h, 3)
    assert [[t["key"] for t in p] for p in pages] == [keys[0:3], keys[3:6], keys[6:7]]


async def test_subscribers_newest_first_in_pages(client, acme, clock):
    h = acme["headers"]
    await make_topic(client, acme)
    order = ["u3", "u1", "u5", "u2", "u4"]
    for user in order:
        clock.advance(1)
        assert (await subscribe(client, h, user=user)).status_code == 201
    # Three more in the same millisecond as u4: the user id orders them, and page boundaries
    # fall between them without skipping or repeating one.
    for user in ("s-a", "s-c", "s-b"):
        assert (await subscribe(client, h, user=user)).status_code == 201
    pages = await all_pages(client, "/v1/topics/news/subscribers", h, 2)
    assert [len(p) for p in pages] == [2, 2, 2, 2]
    items = [s for p in pages for s in p]
    assert [s["user_id"] for s in items] == ["u4", "s-c", "s-b", "s-a", "u2", "u5", "u1", "u3"]
    stamps = [s["subscribed_at"] for s in items]
    assert stamps == sorted(stamps, reverse=True)
    assert set(items[0]) == {"user_id", "subscribed_at"}


async def test_a_users_topics_page_by_key(client, acme):
    h = acme["headers"]
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        await make_topic(client, acme, key)
        assert (await subscribe(client, h, key, "ada")).status_code == 201
    pages = await all_pages(client, "/v1/users/ada/topics", h, 2)
    assert [[t["topic"] for t in p] for p in pages] == [keys[0:2], keys[2:4], keys[4:5]]
    me = await user_token(client, acme, "ada")
    assert len((await client.get("/v1/users/me/topics", headers=me)).json()["items"]) == 5
    assert (await client.get("/v1/users/nobody/topics", headers=h)).json() == {
        "items": [], "next_cursor": None}


@pytest.mark.parametrize("path", ["/v1/topics", "/v1/topics/news/subscribers",
                                  "/v1/users/u1/topics"])
async def test_bad_limits_and_cursors_are_422(client, acme, path):
    h = acme["headers"]
    await make_topic(client, acme)
    problem(await client.get(path, params={"limit": 0}, headers=h), 422, "limit")
    problem(await client.get(path, params={"limit": 201}, headers=h), 422, "limit")
    problem(await client.get(path, params={"cursor": "not a cursor!"}, headers=h), 422, "cursor")
    problem(await client.get(path, params={"cursor": "Kg"}, headers=h), 422, "cursor")  # "*"
    assert (await client.get(path, params={"limit": 200}, headers=h)).status_code == 200


async def test_deleting_a_topic_removes_its_subscriptions(client, acme):
    h = acme["headers"]
    await make_topic(client, acme, "news")
    await make_topic(client, acme, "sport")
    for user in ("u1", "u2"):
        assert (await subscribe(client, h, "news", user)).status_code == 201
    assert (await subscribe(client, h, "sport", "u1")).status_code == 201
    assert (await client.delete("/v1/topics/news", headers=h)).status_code == 204

    r = await client.get("/v1/users/u1/topics", headers=h)
    assert [t["topic"] for t in r.json()["items"]] == ["sport"]
    assert (await client.get("/v1/users/u2/topics", headers=h)).json()["items"] == []
    # Made again, the topic starts with nobody.
    await make_topic(client, acme, "news")
    assert (await client.get("/v1/topics/news", headers=h)).json()["subscribers"] == 0
    assert (await client.get("/v1/topics/news/subscribers", headers=h)).json()["items"] == []
    # The users' profiles stay.
    assert (await client.get("/v1/users/u2", headers=h)).status_code == 200


async def test_concurrent_subscribes_of_a_new_user(client, acme):
    """Several requests for a user with no profile yet: one creates it, none fails."""
    h = acme["headers"]
    await make_topic(client, acme)
    await make_topic(client, acme, "sport")
    answers = await asyncio.gather(*(subscribe(client, h, key, "newcomer")
                                     for key in ("news", "news", "news", "sport", "sport")))
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 201, 201], [
        r.text for r in answers]
    r = await client.get("/v1/users/newcomer/topics", headers=h)
    assert [t["topic"] for t in r.json()["items"]] == ["news", "sport"]


async def test_the_endpoints_are_documented(client):
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths["/v1/topics/{topic}"]) == {"put", "get", "delete"}
    assert set(paths["/v1/topics/{topic}/subscribers/{user_id}"]) == {"put", "delete"}
    assert "get" in paths["/v1/topics"] and "get" in paths["/v1/topics/{topic}/subscribers"]
    assert "get" in paths["/v1/users/{user_id}/topics"]
    put = paths["/v1/topics/{topic}/subscribers/{user_id}"]["put"]
    assert put["description"] and {"200", "201"} <= set(put["responses"])
