"""Pairing over HTTP: the four rules of API.md, with an app key and with a user's own token."""

from __future__ import annotations

import asyncio

from tests.conftest import user_token


async def register(client, headers, user="u1", **body):
    body.setdefault("platform", "android")
    r = await client.post(f"/v1/users/{user}/devices", json=body, headers=headers)
    return r


async def devices_of(client, headers, user):
    r = await client.get(f"/v1/users/{user}/devices", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_rule_1_same_token_refreshes_and_creates_nothing(client, acme):
    h = acme["headers"]
    first = await register(client, h, token="t1", device_info="Pixel 9", app_version="1.0")
    assert first.status_code == 201
    second = await register(client, h, token="t1", app_version="1.1")
    assert second.status_code == 200
    a, b = first.json(), second.json()
    assert a["id"] == b["id"] and b["last_seen_at"] >= a["last_seen_at"]
    assert b["app_version"] == "1.1" and b["device_info"] == "Pixel 9"
    assert len(await devices_of(client, h, "u1")) == 1


async def test_rule_2_token_moves_to_the_new_user(client, acme):
    h = acme["headers"]
    a = (await register(client, h, "alice", token="shared")).json()
    b = await register(client, h, "bob", token="shared")
    assert b.status_code == 200 and b.json()["user_id"] == "bob"
    assert await devices_of(client, h, "alice") == []
    assert [d["id"] for d in await devices_of(client, h, "bob")] == [a["id"]]


async def test_rule_3_device_id_rotates_the_token_in_place(client, acme, container):
    h = acme["headers"]
    a = (await register(client, h, token="old")).json()
    r = await register(client, h, token="new", device_id=a["id"])
    assert r.status_code == 200 and r.json()["id"] == a["id"]
    listed = await devices_of(client, h, "u1")
    assert len(listed) == 1
    # The old token is free again: registering it creates a new device.
    assert (await register(client, h, token="old")).status_code == 201


async def test_rule_3_rotation_onto_a_token_held_elsewhere(client, acme):
    h = acme["headers"]
    mine = (await register(client, h, "u1", token="mine")).json()
    await register(client, h, "u2", token="theirs")
    r = await register(client, h, "u1", token="theirs", device_id=mine["id"])
    assert r.status_code == 200 and r.json()["id"] == mine["id"]
    assert await devices_of(client, h, "u2") == []
    assert [d["id"] for d in await devices_of(client, h, "u1")] == [mine["id"]]


async def test_unknown_device_id_registers_a_new_device(client, acme):
    r = await register(client, acme["headers"], token="t", device_id="01M7Y6Y2327WN1CRD5G5K9FTWM")
    assert r.status_code == 201 and r.json()["id"] != "01M7Y6Y2327WN1CRD5G5K9FTWM"


async def test_user_token_registers_its_own_devices(client, acme):
    me = await user_token(client, acme, "ada")
    r = await register(client, me, "me", token="t-ada", platform="ios")
    assert r.status_code == 201 and r.json()["user_id"] == "ada"
    assert len(await devices_of(client, me, "me")) == 1
    assert (await register(client, me, "bob", token="t-bob")).status_code == 404
    device_id = r.json()["id"]
    other = await user_token(client, acme, "bob")
    r = await client.delete(f"/v1/users/me/devices/{device_id}", headers=other)
    assert r.status_code == 404
    r = await client.delete(f"/v1/users/me/devices/{device_id}", headers=me)
    assert r.status_code == 204
    assert await devices_of(client, me, "me") == []


async def test_web_push_subscription(client, acme):
    sub = {"endpoint": "https://push.example.net/send/abc",
           "keys": {"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQ", "auth": "tBHItJI5svbpez7KI4CCXg"}}
    r = await register(client, acme["headers"], platform="web", token=sub)
    assert r.status_code == 201
    # The same endpoint with rotated keys is the same subscription.
    sub2 = {**sub, "keys": {**sub["keys"], "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}
    r2 = await register(client, acme["headers"], platform="web", token=sub2)
    assert r2.status_code == 200 and r2.json()["id"] == r.json()["id"]
    assert (await register(client, acme["headers"], platform="android", token=sub)).status_code == 422


async def test_concurrent_registrations_of_one_token_leave_one_owner(client, acme):
    h = acme["headers"]
    results = await asyncio.gather(*(register(client, h, f"user-{i}", token="contested")
                                     for i in range(8)))
    assert all(r.status_code in (200, 201) for r in results), [(r.status_code, r.text[-160:]) for r in results if r.status_code not in (200, 201)]
    owners = []
    for i in range(8):
        owners += [d["user_id"] for d in await devices_of(client, h, f"user-{i}")]
    assert len(owners) == 1


async def test_routing_shows_the_effective_provider(client, acme):
    r = await register(client, acme["headers"], platform="ios", token="apns-token")
    assert r.json()["provider"] == "log"
