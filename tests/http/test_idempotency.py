"""Idempotency-Key on creating POSTs."""

from __future__ import annotations

import asyncio

from tests.conftest import ADMIN


async def test_same_key_same_body_replays_and_creates_nothing(client, acme):
    h = {**acme["headers"], "Idempotency-Key": "order-42-shipped"}
    body = {"to": {"user_id": "u1"}, "title": "Shipped", "data": {"order": 42}}
    first = await client.post("/v1/notifications", json=body, headers=h)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # The same JSON value with other key order and spacing is the same request.
    again = await client.post("/v1/notifications", content='{"data":{"order":42}, "title":"Shipped",'
                              ' "to":{"user_id":"u1"}}',
                              headers={**h, "Content-Type": "application/json"})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    inbox = await client.get("/v1/users/u1/notifications", headers=acme["headers"])
    assert len(inbox.json()["items"]) == 1


async def test_same_key_other_body_is_409(client, acme):
    h = {**acme["headers"], "Idempotency-Key": "k-1"}
    assert (await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "a"},
                              headers=h)).status_code == 202
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "b"}, headers=h)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("idempotency-key-reused")


async def test_keys_are_scoped_per_app(client, acme, globex):
    body = {"to": {"user_id": "u1"}, "title": "a"}
    r1 = await client.post("/v1/notifications", json=body,
                           headers={**acme["headers"], "Idempotency-Key": "same"})
    r2 = await client.post("/v1/notifications", json=body,
                           headers={**globex["headers"], "Idempotency-Key": "same"})
    assert r1.status_code == r2.status_code == 202
    assert "idempotent-replayed" not in r2.headers
    assert r1.json()["items"][0]["id"] != r2.json()["items"][0]["id"]


async def test_concurrent_twins_create_once(client, acme):
    h = {**acme["headers"], "Idempotency-Key": "twins"}
    body = {"to": {"user_id": "u1"}, "title": "once"}
    results = await asyncio.gather(*(client.post("/v1/notifications", json=body, headers=h)
                                     for _ in range(6)))
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["items"][0]["id"] for r in results}) == 1
    inbox = await client.get("/v1/users/u1/notifications", headers=acme["headers"])
    assert len(inbox.json()["items"]) == 1


async def test_key_expires_after_24_hours(client, acme, clock):
    h = {**acme["headers"], "Idempotency-Key": "daily"}
    body = {"to": {"user_id": "u1"}, "title": "a"}
    first = await client.post("/v1/notifications", json=body, headers=h)
    clock.advance(24 * 3600 + 1)
    later = await client.post("/v1/notifications", json=body, headers=h)
    assert later.status_code == 202 and "idempotent-replayed" not in later.headers
    assert later.json()["items"][0]["id"] != first.json()["items"][0]["id"]


async def test_device_registration_replays(client, acme):
    h = {**acme["headers"], "Idempotency-Key": "dev-1"}
    first = await client.post("/v1/users/u1/devices", json={"platform": "ios", "token": "x"}, headers=h)
    again = await client.post("/v1/users/u1/devices", json={"platform": "ios", "token": "x"}, headers=h)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"


async def test_minting_a_key_replays_the_same_key(client, acme):
    h = {**ADMIN, "Idempotency-Key": "mint-1"}
    first = await client.post("/v1/apps/acme/keys", headers=h)
    again = await client.post("/v1/apps/acme/keys", headers=h)
    assert first.status_code == again.status_code == 201
    assert again.json()["key"] == first.json()["key"]
    listed = await client.get("/v1/apps/acme/keys", headers=ADMIN)
    assert len(listed.json()["items"]) == 2  # the fixture's key and this one


async def test_a_rejected_request_is_not_remembered(client, acme):
    h = {**acme["headers"], "Idempotency-Key": "fix-and-retry"}
    bad = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "channels": ["fax"],
                                                       "title": "a"}, headers=h)
    assert bad.status_code == 422
    good = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "a"}, headers=h)
    assert good.status_code == 202
