from tests.conftest import ADMIN, drain


async def test_walkthrough(client, acme, container):
    h = acme["headers"]
    r = await client.post("/v1/users/u1/devices", json={"platform": "android", "token": "t1"}, headers=h)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "Hi"}, headers=h)
    assert r.status_code == 202, r.text
    assert await drain(container) == 1
    r = await client.get("/v1/users/u1/notifications", headers=h)
    assert r.json()["unread_count"] == 1
    assert r.json()["items"][0]["status"] == "sent"
    r = await client.get("/v1/apps", headers=ADMIN)
    assert r.status_code == 200
