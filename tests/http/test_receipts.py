"""Receipts through `POST /v1/callbacks/sns/{app_id}`: SES events and SNS SMS status, signed by
"Amazon" (a test signer with its own certificate), move deliveries and mark bounced addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, bearer, drain
from tests.fakes.providers import ScriptedFactory
from tests.fakes.sns_signer import TOPIC_ARN, SnsSigner, ses_bounce, ses_complaint, ses_delivery, sms_status
from tidings.adapters.receipts.sns import SnsVerifier
from tidings.bootstrap import Container
from tidings.entrypoints.http.app import create_app
from tidings.entrypoints.http.routes.callbacks import SnsEndpoint

SES = {"region": "us-east-1", "from": "news@acme.example"}
SNS = {"region": "us-east-1"}


@pytest.fixture
def signer() -> SnsSigner:
    return SnsSigner()


@pytest.fixture
def visited() -> list[str]:
    return []


@pytest.fixture
async def client(container: Container, signer: SnsSigner,
                 visited: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async def visit(url: str) -> int:
        visited.append(url)
        return 200

    app = create_app(container)
    app.state.sns = SnsEndpoint(SnsVerifier(fetch=signer.fetcher), visit)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://tidings.test") as c:
        yield c


async def _app(client: httpx.AsyncClient, **ses: Any) -> dict[str, str]:
    r = await client.put("/v1/apps/acme", headers=ADMIN, json={
        "name": "Acme", "providers": {"ses": {**SES, **ses}, "sns": SNS},
        "routing": {"email": "ses", "sms": "sns"}})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/apps/acme/keys", headers=ADMIN)
    return bearer(r.json()["key"])


async def _post(client: httpx.AsyncClient, signer: SnsSigner, doc: dict[str, Any],
                app_id: str = "acme") -> httpx.Response:
    return await client.post(f"/v1/callbacks/sns/{app_id}", content=signer.body(doc),
                             headers=signer.headers(doc))


async def _email(client: httpx.AsyncClient, container: Container, key: dict[str, str],
                 providers: ScriptedFactory) -> dict[str, Any]:
    await client.put("/v1/users/u1", headers=key, json={"email": "ann@example.com"})
    r = await client.post("/v1/notifications", headers=key,
                          json={"to": {"user_id": "u1"}, "channels": ["email"], "title": "Hi"})
    note = r.json()["items"][0]
    await drain(container)
    r = await client.get(f"/v1/notifications/{note['id']}", headers=key)
    [delivery] = r.json()["deliveries"]
    assert delivery["status"] == "sent"
    return {"note": note["id"], "message_id": delivery["provider_message_id"]}


async def test_a_hard_bounce_fails_the_delivery_and_stops_mail_to_the_address(
        client: httpx.AsyncClient, container: Container, signer: SnsSigner,
        providers: ScriptedFactory) -> None:
    key = await _app(client)
    sent = await _email(client, container, key, providers)
    r = await _post(client, signer, signer.notification(ses_bounce(sent["message_id"],
                                                                   "ann@example.com")))
    assert r.status_code == 204, r.text
    r = await client.get(f"/v1/notifications/{sent['note']}", headers=key)
    assert r.json()["status"] == "failed"
    [delivery] = r.json()["deliveries"]
    assert delivery["status"] == "failed" and "Permanent bounce" in delivery["error"]
    user = (await client.get("/v1/users/u1", headers=key)).json()
    assert user["email_undeliverable"]["reason"].startswith("Permanent bounce")
    # The next e-mail is not sent to the bounced address...
    r = await client.post("/v1/notifications", headers=key,
                          json={"to": {"user_id": "u1"}, "channels": ["email"], "title": "Again"})
    [skipped] = r.json()["items"][0]["deliveries"]
    assert skipped["status"] == "skipped" and "undeliverable" in skipped["error"]
    # ...until the user has another address.
    await client.put("/v1/users/u1", headers=key, json={"email": "ann@new.example"})
    assert (await client.get("/v1/users/u1", headers=key)).json()["email_undeliverable"] is None
    r = await client.post("/v1/notifications", headers=key,
                          json={"to": {"user_id": "u1"}, "channels": ["email"], "title": "New"})
    assert r.json()["items"][0]["deliveries"][0]["status"] == "pending"


async def test_delivery_and_complaint(client: httpx.AsyncClient, container: Container,
                                      signer: SnsSigner, providers: ScriptedFactory) -> None:
    key = await _app(client)
    sent = await _email(client, container, key, providers)
    r = await _post(client, signer, signer.notification(ses_delivery(sent["message_id"],
                                                                     "ann@example.com")))
    assert r.status_code == 204
    r = await client.get(f"/v1/notifications/{sent['note']}", headers=key)
    assert r.json()["deliveries"][0]["status"] == "delivered"
    assert r.json()["status"] == "sent"
    # A complaint keeps the delivery delivered, but the address is not mailed again.
    await _post(client, signer, signer.notification(ses_complaint(sent["message_id"],
                                                                  "ann@example.com")))
    r = await client.get(f"/v1/notifications/{sent['note']}", headers=key)
    assert r.json()["deliveries"][0]["status"] == "delivered"
    user = (await client.get("/v1/users/u1", headers=key)).json()
    assert user["email_undeliverable"]["reason"] == "complaint: abuse"


async def test_sms_delivery_status(client: httpx.AsyncClient, container: Container,
                                   signer: SnsSigner) -> None:
    key = await _app(client)
    r = await client.post("/v1/notifications", headers=key,
                          json={"to": {"phone": "+15555550100"}, "body": "Code 1234"})
    note = r.json()["items"][0]["id"]
    await drain(container)
    mid = (await client.get(f"/v1/notifications/{note}", headers=key)).json()[
        "deliveries"][0]["provider_message_id"]
    doc = signer.notification(sms_status(mid, success=False, response="Phone is currently unreachable"))
    assert (await _post(client, signer, doc)).status_code == 204
    d = (await client.get(f"/v1/notifications/{note}", headers=key)).json()["deliveries"][0]
    assert d["status"] == "failed" and "unreachable" in d["error"]


async def test_forged_foreign_and_unknown_messages_change_nothing(
        client: httpx.AsyncClient, container: Container, signer: SnsSigner,
        providers: ScriptedFactory) -> None:
    key = await _app(client, receipt_topic_arns=[TOPIC_ARN])
    sent = await _email(client, container, key, providers)
    forged = signer.notification(ses_bounce(sent["message_id"], "ann@example.com"))
    forged["Message"] = forged["Message"].replace("Permanent", "Transient")
    assert (await _post(client, signer, forged)).status_code == 403
    other_topic = signer.notification(ses_bounce(sent["message_id"], "ann@example.com"),
                                      topic_arn="arn:aws:sns:us-east-1:999999999999:elsewhere")
    assert (await _post(client, signer, other_topic)).status_code == 403
    good = signer.notification(ses_bounce(sent["message_id"], "ann@example.com"))
    assert (await _post(client, signer, good, app_id="globex")).status_code == 404
    r = await client.post("/v1/callbacks/sns/acme", content=b"{not json",
                          headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    r = await client.get(f"/v1/notifications/{sent['note']}", headers=key)
    assert r.json()["deliveries"][0]["status"] == "sent"
    assert (await client.get("/v1/users/u1", headers=key)).json()["email_undeliverable"] is None


async def test_the_subscription_is_confirmed(client: httpx.AsyncClient, signer: SnsSigner,
                                             visited: list[str]) -> None:
    await _app(client)
    doc = signer.subscription_confirmation()
    assert (await _post(client, signer, doc)).status_code == 204
    assert visited == [doc["SubscribeURL"]]
