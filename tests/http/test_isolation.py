"""Who may reach what (API.md, Authentication): a credential of one app never reads or changes
another app's data (404, as if it did not exist), a user token reaches only its own user, and
every credential that is not (or no longer) valid is refused with 401."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import ADMIN, bearer, create_app_with_key, make_settings, user_token
from tidings.bootstrap import Container
from tidings.entrypoints.http.app import create_app

PHONE = "+393331234567"
NOWHERE_ID = "01M7Y6Y2327WN1CRD5G5K9FTWM"  # a well-formed id that names nothing


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """Like the shared `client`, but an unhandled error comes back as the 500 a real client sees."""
    transport = httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as c:
        yield c


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].split(";")[0] == "application/problem+json", r.headers
    doc = r.json()
    assert doc["status"] == status and doc["type"] and doc["title"] and doc["detail"], doc
    return doc


def same_answer(a: httpx.Response, b: httpx.Response) -> None:
    """`a` (about something that exists elsewhere) says exactly what `b` (about nothing) says."""
    assert a.status_code == b.status_code, (a.text, b.text)
    if a.headers.get("content-type", "").startswith("application/problem+json"):
        assert a.json()["type"] == b.json()["type"] and a.json()["title"] == b.json()["title"]
    else:
        assert a.json() == b.json()


async def seed(client: httpx.AsyncClient, app: dict[str, Any], user: str = "u1",
               token: str = "tok-u1") -> dict[str, str]:
    """A user with a profile, a device, an in-app notification, and an SMS to a raw number."""
    h = app["headers"]
    r = await client.put(f"/v1/users/{user}", json={"email": f"{user}@example.com", "phone": PHONE,
                                                    "attributes": {"plan": "pro"}}, headers=h)
    assert r.status_code in (200, 201), r.text
    r = await client.post(f"/v1/users/{user}/devices", json={"platform": "android", "token": token},
                          headers=h)
    assert r.status_code == 201, r.text
    device_id = r.json()["id"]
    r = await client.post("/v1/notifications", json={"to": {"user_id": user}, "title": f"for {user}",
                                                     "channels": ["in_app"]}, headers=h)
    assert r.status_code == 202, r.text
    notification_id = r.json()["items"][0]["id"]
    r = await client.post("/v1/notifications", json={"to": {"phone": PHONE}, "body": "code 1234"},
                          headers=h)
    assert r.status_code == 202, r.text
    return {"device": device_id, "notification": notification_id, "sms": r.json()["items"][0]["id"]}


async def assert_intact(client: httpx.AsyncClient, app: dict[str, Any], seeded: dict[str, str],
                        user: str = "u1") -> None:
    h = app["headers"]
    r = await client.get(f"/v1/users/{user}", headers=h)
    assert r.status_code == 200 and r.json()["email"] == f"{user}@example.com", r.text
    r = await client.get(f"/v1/users/{user}/devices", headers=h)
    assert [(d["id"], d["enabled"]) for d in r.json()["items"]] == [(seeded["device"], True)], r.text
    r = await client.get(f"/v1/users/{user}/notifications", headers=h)
    inbox = r.json()
    assert [n["id"] for n in inbox["items"]] == [seeded["notification"]], r.text
    assert inbox["items"][0]["read_at"] is None and inbox["unread_count"] == 1
    r = await client.get(f"/v1/notifications/{seeded['sms']}", headers=h)
    assert r.status_code == 200, r.text


# --- one app's key, another app's data ----------------------------------------------------------
async def test_notifications_of_another_app_do_not_exist(client, acme, globex):
    seeded = await seed(client, acme)
    g = globex["headers"]
    for nid in (seeded["notification"], seeded["sms"]):
        r = await client.get(f"/v1/notifications/{nid}", headers=g)
        assert_problem(r, 404)
        same_answer(r, await client.get(f"/v1/notifications/{NOWHERE_ID}", headers=g))
        r = await client.delete(f"/v1/notifications/{nid}", headers=g)
        assert_problem(r, 404)  # not 409: for globex it does not exist
    r = await client.get("/v1/notifications", params={"to": PHONE}, headers=g)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/v1/notifications", params={"to": PHONE}, headers=acme["headers"])
    assert [n["id"] for n in r.json()["items"]] == [seeded["sms"]]
    await assert_intact(client, acme, seeded)


async def test_users_of_another_app_do_not_exist(client, acme, globex):
    seeded = await seed(client, acme)
    g = globex["headers"]
    r = await client.get("/v1/users/u1", headers=g)
    assert_problem(r, 404)
    same_answer(r, await client.get("/v1/users/nobody", headers=g))
    r = await client.get("/v1/users", headers=g)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/v1/users", params={"attribute.plan": "pro"}, headers=g)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.delete("/v1/users/u1", headers=g)
    assert_problem(r, 404)
    # Upserting the same id in globex creates globex's own user and leaves acme's alone.
    r = await client.put("/v1/users/u1", json={"email": "other@example.com"}, headers=g)
    assert r.status_code == 201, r.text
    await assert_intact(client, acme, seeded)


async def test_devices_of_another_app_do_not_exist(client, acme, globex):
    seeded = await seed(client, acme)
    g = globex["headers"]
    r = await client.get("/v1/users/u1/devices", headers=g)
    same_answer(r, await client.get("/v1/users/nobody/devices", headers=g))
    assert r.status_code == 404 or r.json()["items"] == []
    r = await client.delete(f"/v1/users/u1/devices/{seeded['device']}", headers=g)
    assert_problem(r, 404)
    # The same provider token in another app is another device: nothing moves between apps.
    r = await client.post("/v1/users/u1/devices", json={"platform": "android", "token": "tok-u1"},
                          headers=g)
    assert r.status_code == 201 and r.json()["id"] != seeded["device"], r.text
    # Naming acme's device id does not rotate acme's device.
    r = await client.post("/v1/users/u1/devices", json={"platform": "android", "token": "tok-other",
                                                        "device_id": seeded["device"]}, headers=g)
    assert r.status_code == 201 and r.json()["id"] != seeded["device"], r.text
    await assert_intact(client, acme, seeded)


async def test_inboxes_of_another_app_do_not_exist(client, acme, globex):
    seeded = await seed(client, acme)
    g = globex["headers"]
    r = await client.get("/v1/users/u1/notifications", headers=g)
    assert r.status_code == 200 and r.json()["items"] == [] and r.json()["unread_count"] == 0
    r = await client.post(f"/v1/users/u1/notifications/{seeded['notification']}/read", headers=g)
    assert_problem(r, 404)
    r = await client.post("/v1/users/u1/notifications/read-all", headers=g)
    assert r.status_code == 200 and r.json() == {"updated": 0}
    await assert_intact(client, acme, seeded)


async def test_a_user_token_of_another_app_reaches_only_its_own_app(client, acme, globex):
    seeded = await seed(client, acme)
    theirs = await user_token(client, globex, "u1")  # the same user id, in globex
    r = await client.get("/v1/users/me/notifications", headers=theirs)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/v1/users/me/devices", headers=theirs)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.post(f"/v1/users/me/notifications/{seeded['notification']}/read", headers=theirs)
    assert_problem(r, 404)
    r = await client.delete(f"/v1/users/me/devices/{seeded['device']}", headers=theirs)
    assert_problem(r, 404)
    assert_problem(await client.get("/v1/users/me", headers=theirs), 404)
    await assert_intact(client, acme, seeded)


async def test_keys_of_another_app_are_out_of_reach(client, acme, globex):
    a, g = acme["headers"], globex["headers"]
    assert_problem(await client.get("/v1/apps/globex/keys", headers=a), 403)
    assert_problem(await client.post("/v1/apps/globex/keys", headers=a), 403)
    assert_problem(await client.delete(f"/v1/apps/globex/keys/{globex['id']}", headers=a), 403)
    # Even the operator cannot revoke a key through an app it does not belong to.
    assert_problem(await client.delete(f"/v1/apps/globex/keys/{acme['id']}", headers=ADMIN), 404)
    r = await client.get("/v1/apps/globex/keys", headers=ADMIN)
    assert [k["id"] for k in r.json()["items"]] == [globex["id"]]
    assert (await client.get("/v1/users", headers=a)).status_code == 200
    assert (await client.get("/v1/users", headers=g)).status_code == 200


async def test_another_apps_document_is_refused_like_a_missing_one(client, acme, globex):
    r = await client.get("/v1/apps/globex", headers=acme["headers"])
    assert r.status_code in (403, 404), r.text
    same_answer(r, await client.get("/v1/apps/nowhere", headers=acme["headers"]))


# --- a user token reaches only its own user -----------------------------------------------------
async def test_a_user_token_reaches_its_own_user_through_me_and_its_id(client, acme):
    await seed(client, acme, "u1")
    me = await user_token(client, acme, "u1")
    for path in ("/v1/users/me", "/v1/users/u1"):
        r = await client.get(path, headers=me)
        assert r.status_code == 200 and r.json()["id"] == "u1", r.text
    for path in ("/v1/users/me/devices", "/v1/users/me/notifications"):
        r = await client.get(path, headers=me)
        assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    r = await client.put("/v1/users/me", json={"locale": "it-IT"}, headers=me)
    assert r.status_code == 200 and r.json()["locale"] == "it-IT", r.text


async def test_a_user_token_on_another_users_paths_gets_404(client, acme):
    await seed(client, acme, "u1", token="tok-u1")
    theirs = await seed(client, acme, "u2", token="tok-u2")
    me = await user_token(client, acme, "u1")
    attempts = [
        ("GET", "/v1/users/u2", None),
        ("PUT", "/v1/users/u2", {"email": "mallory@example.com"}),
        ("GET", "/v1/users/u2/devices", None),
        ("POST", "/v1/users/u2/devices", {"platform": "android", "token": "tok-mallory"}),
        ("DELETE", f"/v1/users/u2/devices/{theirs['device']}", None),
        ("DELETE", f"/v1/users/me/devices/{theirs['device']}", None),
        ("GET", "/v1/users/u2/notifications", None),
        ("POST", f"/v1/users/u2/notifications/{theirs['notification']}/read", None),
        ("POST", f"/v1/users/me/notifications/{theirs['notification']}/read", None),
        ("POST", "/v1/users/u2/notifications/read-all", None),
    ]
    for method, path, body in attempts:
        r = await client.request(method, path, json=body, headers=me)
        assert_problem(r, 404)
    # The same answer as for a user that exists nowhere.
    same_answer(await client.get("/v1/users/u2", headers=me),
                await client.get("/v1/users/nobody", headers=me))
    await assert_intact(client, acme, theirs, "u2")


async def test_an_idempotency_key_of_one_user_never_replays_to_another(client, acme):
    # A shared device: alice registers, logs out, bob logs in and registers the same token with
    # the app's per-install Idempotency-Key. Bob must get his own answer, and the token moves.
    alice = await user_token(client, acme, "alice")
    bob = await user_token(client, acme, "bob")
    body = {"platform": "android", "token": "shared-device-token"}
    key = {"Idempotency-Key": "register-install-42"}
    r = await client.post("/v1/users/me/devices", json=body, headers={**alice, **key})
    assert r.status_code == 201 and r.json()["user_id"] == "alice", r.text
    r = await client.post("/v1/users/me/devices", json=body, headers={**bob, **key})
    assert r.status_code in (200, 201), r.text
    assert r.json()["user_id"] == "bob", f"bob was answered with alice's device: {r.text[:200]}"
    assert r.headers.get("idempotent-replayed") is None
    devices = await client.get("/v1/users/bob/devices", headers=acme["headers"])
    assert len(devices.json()["items"]) == 1
    devices = await client.get("/v1/users/alice/devices", headers=acme["headers"])
    assert devices.json()["items"] == []
    # Another body under the same key from another user is not a conflict either.
    carol = await user_token(client, acme, "carol")
    r = await client.post("/v1/users/me/devices", json={"platform": "ios", "token": "carols-phone"},
                          headers={**carol, **key})
    assert r.status_code == 201 and r.json()["user_id"] == "carol", r.text


async def test_a_user_token_cannot_send_or_read_what_was_sent(client, acme):
    seeded = await seed(client, acme)
    me = await user_token(client, acme, "u1")
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"}, headers=me)
    assert_problem(r, 403)
    assert_problem(await client.get(f"/v1/notifications/{seeded['notification']}", headers=me), 403)
    assert_problem(await client.get("/v1/notifications", params={"to": PHONE}, headers=me), 403)
    assert_problem(await client.delete(f"/v1/notifications/{seeded['notification']}", headers=me), 403)
    await assert_intact(client, acme, seeded)


async def test_a_user_token_cannot_list_users_mint_tokens_or_delete_itself(client, acme):
    seeded = await seed(client, acme)
    me = await user_token(client, acme, "u1")
    assert_problem(await client.get("/v1/users", headers=me), 403)
    assert_problem(await client.post("/v1/users/me/tokens", headers=me), 403)
    assert_problem(await client.post("/v1/users/u1/tokens", headers=me), 403)
    assert_problem(await client.delete("/v1/users/me", headers=me), 403)
    await assert_intact(client, acme, seeded)


async def test_a_user_token_cannot_manage_apps(client, acme):
    me = await user_token(client, acme, "u1")
    assert_problem(await client.get("/v1/apps", headers=me), 403)
    assert_problem(await client.get("/v1/apps/acme", headers=me), 403)
    assert_problem(await client.put("/v1/apps/acme", json={"name": "Mine"}, headers=me), 403)
    assert_problem(await client.post("/v1/apps/acme/keys", headers=me), 403)


# --- the app key and the admin key each stay in their lane --------------------------------------
async def test_an_app_key_cannot_manage_apps(client, acme):
    a = acme["headers"]
    assert_problem(await client.get("/v1/apps", headers=a), 403)
    assert_problem(await client.put("/v1/apps/newco", json={"name": "New"}, headers=a), 403)
    assert_problem(await client.put("/v1/apps/acme", json={"name": "Renamed"}, headers=a), 403)
    assert_problem(await client.delete("/v1/apps/acme", headers=a), 403)
    assert_problem(await client.post("/v1/apps/acme/keys", headers=a), 403)
    assert_problem(await client.get("/v1/apps/acme/keys", headers=a), 403)
    assert_problem(await client.delete(f"/v1/apps/acme/keys/{acme['id']}", headers=a), 403)
    assert_problem(await client.get("/v1/apps/newco", headers=ADMIN), 404)
    r = await client.get("/v1/apps/acme", headers=ADMIN)
    assert r.status_code == 200 and r.json()["name"] == "Acme"
    r = await client.get("/v1/apps/acme/keys", headers=ADMIN)
    assert [k["id"] for k in r.json()["items"]] == [acme["id"]]


async def test_the_admin_key_cannot_send_or_act_for_users(client, acme):
    assert_problem(await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"},
                                     headers=ADMIN), 403)
    assert_problem(await client.get("/v1/users", headers=ADMIN), 403)
    assert_problem(await client.get("/v1/users/u1", headers=ADMIN), 403)
    assert_problem(await client.put("/v1/users/u1", json={}, headers=ADMIN), 403)
    assert_problem(await client.post("/v1/users/u1/devices", json={"platform": "android", "token": "t"},
                                     headers=ADMIN), 403)
    assert_problem(await client.post("/v1/users/u1/tokens", headers=ADMIN), 403)
    r = await client.get("/v1/users/u1/notifications", headers=acme["headers"])
    assert r.json()["items"] == []
    assert_problem(await client.get("/v1/users/u1", headers=acme["headers"]), 404)


# --- credentials that are not, or no longer, valid -----------------------------------------------
def sign(secret: str, *, sub: str = "u1", aud: Any = "acme", exp_in: int | None = 3600,
         kid: str | None = None, alg: str = "HS256", **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "aud": aud, "iat": int(time.time()), **claims}
    if exp_in is not None:
        payload["exp"] = int(time.time()) + exp_in
    return jwt.encode(payload, secret, alg, headers={"kid": kid} if kid else None)


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def assert_unauthenticated(r: httpx.Response) -> None:
    assert_problem(r, 401)
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), r.headers


class TestRevocationWithCredentialCaching:
    """Revocation takes effect at once in this process even while credentials are cached."""

    @pytest.fixture
    def settings(self):
        return make_settings(auth_cache_seconds=60)

    async def test_a_revoked_key_gets_401_at_once(self, client, acme):
        second = (await client.post("/v1/apps/acme/keys", headers=ADMIN)).json()
        assert (await client.get("/v1/users", headers=acme["headers"])).status_code == 200  # cached
        r = await client.delete(f"/v1/apps/acme/keys/{acme['id']}", headers=ADMIN)
        assert r.status_code == 204
        assert_unauthenticated(await client.get("/v1/users", headers=acme["headers"]))
        assert_unauthenticated(await client.post(
            "/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"}, headers=acme["headers"]))
        # The app's other key is unaffected.
        assert (await client.get("/v1/users", headers=bearer(second["key"]))).status_code == 200
        # Revoking twice: the key is gone.
        assert_problem(await client.delete(f"/v1/apps/acme/keys/{acme['id']}", headers=ADMIN), 404)

    async def test_user_tokens_signed_by_a_revoked_key_get_401(self, client, acme):
        second = (await client.post("/v1/apps/acme/keys", headers=ADMIN)).json()
        second["headers"] = bearer(second["key"])
        old = await user_token(client, acme, "u1")
        new = await user_token(client, second, "u1")
        unnamed = bearer(sign(acme["signing_secret"]))  # no kid: every active key is tried
        for token in (old, new, unnamed):
            assert (await client.get("/v1/users/me/notifications", headers=token)).status_code == 200
        assert (await client.delete(f"/v1/apps/acme/keys/{acme['id']}", headers=ADMIN)).status_code == 204
        assert_unauthenticated(await client.get("/v1/users/me/notifications", headers=old))
        assert_unauthenticated(await client.get("/v1/users/me/notifications", headers=unnamed))
        assert (await client.get("/v1/users/me/notifications", headers=new)).status_code == 200

    async def test_deleting_an_app_revokes_its_keys_and_tokens_at_once(self, client, acme):
        token = await user_token(client, acme, "u1")
        assert (await client.get("/v1/users", headers=acme["headers"])).status_code == 200  # cached
        assert (await client.get("/v1/users/me", headers=token)).status_code == 404  # cached too
        assert (await client.delete("/v1/apps/acme", headers=ADMIN)).status_code == 204
        assert_unauthenticated(await client.get("/v1/users", headers=acme["headers"]))
        assert_unauthenticated(await client.put("/v1/users/u1", json={"email": "a@example.com"},
                                                headers=acme["headers"]))
        assert_unauthenticated(await client.get("/v1/users/me", headers=token))
        # An app created again under the same id is a new app: the old credentials do not reach it.
        assert (await client.put("/v1/apps/acme", json={"name": "New tenant"}, headers=ADMIN)).status_code == 201
        assert_unauthenticated(await client.get("/v1/users", headers=acme["headers"]))
        assert_unauthenticated(await client.post(
            "/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"}, headers=acme["headers"]))
        fresh = (await client.post("/v1/apps/acme/keys", headers=ADMIN)).json()
        r = await client.get("/v1/users", headers=bearer(fresh["key"]))
        assert r.status_code == 200 and r.json()["items"] == [], r.text


async def test_an_expired_user_token_gets_401(client, acme):
    token = sign(acme["signing_secret"], kid=acme["id"], exp_in=-3600)
    assert_unauthenticated(await client.get("/v1/users/me/notifications", headers=bearer(token)))


async def test_a_user_token_without_expiry_gets_401(client, acme):
    token = sign(acme["signing_secret"], kid=acme["id"], exp_in=None)
    assert_unauthenticated(await client.get("/v1/users/me/notifications", headers=bearer(token)))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 forgery
async def test_a_user_token_with_a_wrong_signature_gets_401(client, acme, globex):
    cases = {
        "a made-up secret": sign("not-the-signing-secret-0123456789abcdef", kid=acme["id"]),
        "a made-up secret, no kid": sign("not-the-signing-secret-0123456789abcdef"),
        "another app's secret": sign(globex["signing_secret"], aud="acme"),
        "another app's secret and kid": sign(globex["signing_secret"], aud="acme", kid=globex["id"]),
        "this app's secret for another app": sign(acme["signing_secret"], aud="globex", kid=acme["id"]),
        "HS512 with the right secret": sign(acme["signing_secret"], kid=acme["id"], alg="HS512"),
    }
    genuine = (await client.post("/v1/users/u1/tokens", headers=acme["headers"])).json()["token"]
    head, _, sig = genuine.split(".")
    forged_payload = b64({"sub": "u2", "aud": "acme", "exp": int(time.time()) + 3600})
    cases["a genuine signature over another payload"] = f"{head}.{forged_payload}.{sig}"
    cases["a genuine token with its signature cut"] = f"{head}.{genuine.split('.')[1]}."
    for name, token in cases.items():
        r = await client.get("/v1/users/me/notifications", headers=bearer(token))
        assert r.status_code == 401, f"{name}: {r.status_code} {r.text[:200]}"
        assert_unauthenticated(r)


async def test_a_user_token_naming_an_impossible_app_gets_401(client, acme):
    # `aud` is read before the signature is checked: whatever it holds, the answer is 401.
    for aud in ("acme\u0000", "\u0000", "a" * 300, ["acme"], 42, None):
        payload = {"sub": "u1", "aud": aud, "exp": int(time.time()) + 3600}
        token = jwt.encode(payload, "not-the-signing-secret-0123456789abcdef", "HS256")
        r = await client.get("/v1/users/me/notifications", headers=bearer(token))
        assert r.status_code == 401, f"aud={aud!r}: {r.status_code} {r.text[:200]}"


async def test_a_user_token_with_alg_none_gets_401(client, acme):
    claims = {"sub": "u1", "aud": "acme", "exp": int(time.time()) + 3600}
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "none", "typ": "JWT", "kid": acme["id"]},
                   {"alg": "None"}, {"alg": "NONE", "kid": acme["id"]}):
        token = f"{b64(header)}.{b64(claims)}."
        assert_unauthenticated(await client.get("/v1/users/me/notifications", headers=bearer(token)))


@pytest.mark.parametrize("path", ["/v1/users", "/v1/users/u1", "/v1/users/me/notifications",
                                  "/v1/notifications/" + NOWHERE_ID, "/v1/apps"])
async def test_no_credential_is_a_401_problem_with_www_authenticate(client, acme, path):
    assert_unauthenticated(await client.get(path))
    for header in ("", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", acme["key"],
                   "Bearer tds_not-a-key-of-anyone", "Bearer tda_not-the-admin-key",
                   "Bearer not.a.jwt", "Bearer garbage"):
        r = await client.get(path, headers={"Authorization": header})
        assert r.status_code == 401, f"{header!r}: {r.status_code}"
        assert_unauthenticated(r)


async def test_no_credential_writes_nothing(client, acme):
    r = await client.post("/v1/notifications", json={"to": {"user_id": "u1"}, "title": "x"})
    assert_unauthenticated(r)
    r = await client.post("/v1/users/u1/devices", json={"platform": "android", "token": "t"})
    assert_unauthenticated(r)
    r = await client.get("/v1/users/u1/notifications", headers=acme["headers"])
    assert r.json()["items"] == []
    assert_problem(await client.get("/v1/users/u1", headers=acme["headers"]), 404)


async def test_a_third_app_sees_nothing_of_two_others(client, acme, globex):
    a = await seed(client, acme)
    g = await seed(client, globex)
    initech = await create_app_with_key(client, "initech")
    h = initech["headers"]
    for nid in (a["notification"], g["notification"], a["sms"], g["sms"]):
        assert_problem(await client.get(f"/v1/notifications/{nid}", headers=h), 404)
    assert (await client.get("/v1/users", headers=h)).json()["items"] == []
    await assert_intact(client, acme, a)
    await assert_intact(client, globex, g)
