"""Apps (admin), users (profiles) and the operations endpoints."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import ADMIN, user_token


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


SERVICE_ACCOUNT = {
    "type": "service_account", "project_id": "acme-prod", "client_email": "fcm@acme-prod.iam.gserviceaccount.com",
    "private_key": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "token_uri": "https://oauth2.googleapis.com/token",
}
EC_KEY = _pem(ec.generate_private_key(ec.SECP256R1()))


async def test_app_lifecycle_and_write_only_secrets(client, container):
    r = await client.put("/v1/apps/shop", json={"name": "Shop", "providers": {"fcm": {
        "credentials": SERVICE_ACCOUNT}}, "routing": {"push": {"android": "fcm"}}}, headers=ADMIN)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["providers"] == ["fcm"] and doc["routing"] == {"push": {"android": "fcm"}}
    assert "private_key" not in r.text and "acme-prod" not in r.text
    # The secret is encrypted at rest, not stored in clear.
    async with container.store.reader() as tx:
        stored = await tx.apps.get("shop")
    assert stored.providers_secret and "PRIVATE KEY" not in stored.providers_secret
    # An update that names no providers keeps them; null removes one.
    r = await client.put("/v1/apps/shop", json={"name": "Shop 2"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["providers"] == ["fcm"] and r.json()["name"] == "Shop 2"
    r = await client.put("/v1/apps/shop", json={"providers": {"fcm": None}}, headers=ADMIN)
    assert r.status_code == 422  # routing still names fcm
    r = await client.put("/v1/apps/shop", json={"providers": {"fcm": None}, "routing": {}}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["providers"] == []
    r = await client.get("/v1/apps", headers=ADMIN)
    assert [a["id"] for a in r.json()["items"]] == ["shop"]
    assert (await client.delete("/v1/apps/shop", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/apps/shop", headers=ADMIN)).status_code == 404
    assert (await client.delete("/v1/apps/shop", headers=ADMIN)).status_code == 404


async def test_app_validation(client):
    bad = [
        ("Bad_Id", {"name": "x"}),
        ("ok", {}),  # a new app needs a name
        ("ok", {"name": "x", "routing": {"push": {"android": "carrier-pigeon"}}}),
        ("ok", {"name": "x", "routing": {"push": {"android": "fcm"}}}),  # fcm not configured
        ("ok", {"name": "x", "providers": {"fcm": {"credentials": {"type": "service_account"}}}}),
        ("ok", {"name": "x", "providers": {"apns": {"team_id": "T", "key_id": "K",
                                                     "private_key": "x", "topic": "t"}}}),
        ("ok", {"name": "x", "providers": {"apns": {
            "team_id": "ABCDE12345", "key_id": "KEY1234567", "topic": "com.acme",
            "private_key": SERVICE_ACCOUNT["private_key"]}}}),  # RSA, not the P-256 key APNs signs with
        ("ok", {"name": "x", "providers": {"fcm": {"credentials": {
            **SERVICE_ACCOUNT, "private_key": EC_KEY}}}}),  # the wrong kind of key
        ("ok", {"name": "x", "providers": {"webpush": {"vapid_private_key": "not-a-key",
                                                        "vapid_subject": "mailto:a@b.c"}}}),
        ("ok", {"name": "x", "providers": {"sns": {"region": "us-east-1",
                                                    "platform_applications": {"ios": "arn:nope"}}}}),
        ("ok", {"name": "x", "providers": {"fax": {}}}),
        ("ok", {"name": "x", "webhook": {"url": "ftp://x"}}),
        ("ok", {"name": "x", "defaults": {"timezone": "Mars/Olympus"}}),
        ("ok", {"name": "x", "surprise": True}),
    ]
    for app_id, body in bad:
        r = await client.put(f"/v1/apps/{app_id}", json=body, headers=ADMIN)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/apps", headers=ADMIN)).json()["items"] == []


async def test_keys_list_and_revoke(client, acme):
    r = await client.get("/v1/apps/acme/keys", headers=ADMIN)
    (key,) = r.json()["items"]
    assert key["prefix"] == acme["key"][:12] and "key" not in key
    r = await client.delete(f"/v1/apps/acme/keys/{key['id']}", headers=ADMIN)
    assert r.status_code == 204
    assert (await client.get("/v1/users/u1/devices", headers=acme["headers"])).status_code == 401
    assert (await client.delete(f"/v1/apps/acme/keys/{key['id']}", headers=ADMIN)).status_code == 404


async def test_user_profile_upsert_and_partial_update(client, acme):
    h = acme["headers"]
    r = await client.put("/v1/users/ada@example.com", json={
        "email": "ada@example.com", "phone": "+393331234567", "timezone": "Europe/Rome",
        "locale": "it-IT", "attributes": {"plan": "pro", "seats": 3}}, headers=h)
    assert r.status_code == 201, r.text
    r = await client.put("/v1/users/ada@example.com", json={"locale": "en-GB", "phone": None}, headers=h)
    assert r.status_code == 200
    doc = (await client.get("/v1/users/ada@example.com", headers=h)).json()
    assert doc["locale"] == "en-GB" and doc["phone"] is None and doc["timezone"] == "Europe/Rome"
    assert doc["attributes"] == {"plan": "pro", "seats": 3}
    for body in ({"phone": "3331234567"}, {"email": "nope"}, {"timezone": "Europe/Atlantis"},
                 {"attributes": {"bad key": 1}}, {"locale": "!!"}, {"nickname": "x"}):
        r = await client.put("/v1/users/ada@example.com", json=body, headers=h)
        assert r.status_code == 422, body


async def test_user_list_filters_and_pages(client, acme):
    h = acme["headers"]
    for i in range(5):
        plan = "pro" if i % 2 else "free"
        await client.put(f"/v1/users/u{i}", json={"attributes": {"plan": plan, "n": i}}, headers=h)
    r = await client.get("/v1/users", params={"attribute.plan": "pro"}, headers=h)
    assert [u["id"] for u in r.json()["items"]] == ["u1", "u3"]
    r = await client.get("/v1/users", params={"attribute.n": "4"}, headers=h)
    assert [u["id"] for u in r.json()["items"]] == ["u4"]
    page1 = (await client.get("/v1/users", params={"limit": 2}, headers=h)).json()
    page2 = (await client.get("/v1/users", params={"limit": 2, "cursor": page1["next_cursor"]},
                              headers=h)).json()
    assert [u["id"] for u in page1["items"] + page2["items"]] == ["u0", "u1", "u2", "u3"]
    assert (await client.get("/v1/users", params={"cursor": "garbage!"}, headers=h)).status_code == 422
    assert (await client.get("/v1/users", params={"limit": 500}, headers=h)).status_code == 422


async def test_delete_user_removes_devices_and_inbox(client, acme):
    h = acme["headers"]
    await client.post("/v1/users/u1/devices", json={"platform": "ios", "token": "t"}, headers=h)
    await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"}, headers=h)
    assert (await client.delete("/v1/users/u1", headers=h)).status_code == 204
    assert (await client.get("/v1/users/u1", headers=h)).status_code == 404
    assert (await client.get("/v1/users/u1/devices", headers=h)).json()["items"] == []
    assert (await client.get("/v1/users/u1/notifications", headers=h)).json()["items"] == []
    assert (await client.delete("/v1/users/u1", headers=h)).status_code == 404


async def test_user_updates_own_profile(client, acme):
    me = await user_token(client, acme, "ada")
    r = await client.put("/v1/users/me", json={"locale": "it-IT"}, headers=me)
    assert r.status_code == 201 and r.json()["id"] == "ada"
    assert (await client.get("/v1/users/me", headers=me)).json()["locale"] == "it-IT"
    assert (await client.put("/v1/users/bob", json={"locale": "it"}, headers=me)).status_code == 404
    assert (await client.delete("/v1/users/me", headers=me)).status_code == 403


async def test_operations(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    await client.get("/healthz")
    metrics = (await client.get("/metrics")).text
    assert 'tidings_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics


async def test_openapi_lists_the_contract(client):
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/apps/{app_id}", "put"), ("/v1/apps/{app_id}", "get"), ("/v1/apps", "get"),
        ("/v1/apps/{app_id}", "delete"), ("/v1/apps/{app_id}/keys", "post"),
        ("/v1/apps/{app_id}/keys", "get"), ("/v1/apps/{app_id}/keys/{key_id}", "delete"),
        ("/v1/users/{user_id}", "put"), ("/v1/users/{user_id}", "get"),
        ("/v1/users/{user_id}", "delete"), ("/v1/users", "get"),
        ("/v1/users/{user_id}/tokens", "post"), ("/v1/users/{user_id}/devices", "post"),
        ("/v1/users/{user_id}/devices", "get"), ("/v1/users/{user_id}/devices/{device_id}", "delete"),
        ("/v1/notifications", "post"), ("/v1/notifications/{notification_id}", "get"),
        ("/v1/notifications", "get"), ("/v1/users/{user_id}/notifications", "get"),
        ("/v1/users/{user_id}/notifications/{notification_id}/read", "post"),
        ("/v1/users/{user_id}/notifications/read-all", "post"),
        ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"),
    ]:
        assert method in paths.get(path, {}), (method, path)
    note = spec["components"]["schemas"]["NotificationOut"]["properties"]
    for field in ("id", "user_id", "to", "channels", "title", "body", "data", "category",
                  "created_at", "send_at", "status", "read_at", "sender_id", "deliveries"):
        assert field in note
