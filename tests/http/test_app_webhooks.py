"""An app's webhook: delivery and read events POSTed signed (Standard Webhooks) from the
outbox, retried on its schedule, and URLs that reach private addresses refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, create_app_with_key, drain, make_settings, user_token
from tests.fakes.clock import FakeClock
from tests.fakes.webhook_receiver import WebhookReceiver
from tidings.bootstrap import Container
from tidings.domain.webhooks import new_secret
from tidings.settings import Settings

SECRET = new_secret()


@pytest.fixture
def settings() -> Settings:
    return make_settings(allow_private_webhooks=True)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture
async def hooked(client: httpx.AsyncClient, receiver: WebhookReceiver) -> dict[str, Any]:
    return await create_app_with_key(
        client, "acme", webhook={"url": receiver.url(), "secret": SECRET,
                                 "events": ["delivery.sent", "delivery.failed",
                                            "notification.read"]})


async def events(container: Container) -> int:
    total = 0
    while handled := await container.event_dispatcher.run_once():
        total += handled
    return total


async def test_delivery_and_read_events_arrive_signed(
        client: httpx.AsyncClient, container: Container, clock: FakeClock, hooked: dict[str, Any],
        receiver: WebhookReceiver) -> None:
    r = await client.post("/v1/users/u1/devices", headers=hooked["headers"],
                          json={"platform": "android", "token": "tok-1"})
    assert r.status_code == 201
    r = await client.post("/v1/notifications", headers=hooked["headers"],
                          json={"to": {"user_id": "u1"}, "title": "Hi"})
    note = r.json()["items"][0]
    await drain(container)
    assert await events(container) == 1
    [sent] = receiver.at("/hook")
    assert sent.json["type"] == "delivery.sent"
    assert sent.json["data"]["notification_id"] == note["id"]
    assert sent.json["data"]["channel"] == "push"
    assert sent.id.startswith("msg_")
    assert not receiver.rejected  # the receiver checked the signature with the app's secret

    me = await user_token(client, hooked, "u1")
    r = await client.post(f"/v1/users/me/notifications/{note['id']}/read", headers=me)
    assert r.status_code == 200
    # Reading again, even in the same millisecond, changes nothing and tells nobody.
    await client.post(f"/v1/users/me/notifications/{note['id']}/read", headers=me)
    assert await events(container) == 1
    read = receiver.at("/hook")[-1]
    assert read.json["type"] == "notification.read"
    assert read.json["data"] == {"notification_id": note["id"], "user_id": "u1",
                                 "read_at": read.json["data"]["read_at"]}


async def test_only_the_events_asked_for(client: httpx.AsyncClient, container: Container,
                                         receiver: WebhookReceiver) -> None:
    app = await create_app_with_key(client, "acme", webhook={
        "url": receiver.url(), "secret": SECRET, "events": ["notification.read"]})
    await client.post("/v1/users/u1/devices", headers=app["headers"],
                      json={"platform": "android", "token": "tok-1"})
    await client.post("/v1/notifications", headers=app["headers"],
                      json={"to": {"user_id": "u1"}, "title": "Hi"})
    await drain(container)
    assert await events(container) == 0
    assert receiver.received == []


async def test_a_failing_receiver_is_retried_on_the_schedule_with_the_same_id(
        client: httpx.AsyncClient, container: Container, clock: FakeClock,
        hooked: dict[str, Any], receiver: WebhookReceiver) -> None:
    receiver.answer("/hook", "error", times=2)
    await client.post("/v1/users/u1/devices", headers=hooked["headers"],
                      json={"platform": "android", "token": "tok-1"})
    await client.post("/v1/notifications", headers=hooked["headers"],
                      json={"to": {"user_id": "u1"}, "title": "Hi"})
    await drain(container)
    assert await events(container) == 1  # 500
    assert await events(container) == 0  # not due for 5 s
    clock.advance(5)
    assert await events(container) == 1  # 500 again
    clock.advance(60)
    assert await events(container) == 0  # the second wait is 5 min
    clock.advance(300)
    assert await events(container) == 1  # taken
    ids = {r.id for r in receiver.at("/hook")}
    assert len(receiver.at("/hook")) == 3 and len(ids) == 1
    clock.advance(86_400)
    assert await events(container) == 0  # done for good


async def test_the_secret_is_shown_to_the_operator_who_sets_it_never_on_reads(
        client: httpx.AsyncClient, receiver: WebhookReceiver) -> None:
    r = await client.put("/v1/apps/acme", headers=ADMIN,
                         json={"name": "Acme", "webhook": {"url": receiver.url()}})
    assert r.status_code == 201
    secret = r.json()["webhook"]["secret"]
    assert secret.startswith("whsec_")
    r = await client.get("/v1/apps/acme", headers=ADMIN)
    assert "secret" not in r.json()["webhook"]
    # Changing the events keeps the secret; a new one is made only when asked.
    r = await client.put("/v1/apps/acme", headers=ADMIN,
                         json={"webhook": {"url": receiver.url(), "events": ["delivery.failed"]}})
    assert r.json()["webhook"]["secret"] == secret
    r = await client.put("/v1/apps/acme", headers=ADMIN,
                         json={"webhook": {"url": receiver.url(), "secret": "nope"}})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "webhook.secret"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]:8080/hook", "http://localhost/hook"])
async def test_private_webhook_urls_are_refused_unless_allowed(
        url: str, store: Any, clock: FakeClock, providers: Any) -> None:
    from tidings.bootstrap import build
    from tidings.entrypoints.http.app import create_app

    container = build(make_settings(), store=store, clock=clock, provider_factory=providers)
    await container.prepare()
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.put("/v1/apps/acme", headers=ADMIN,
                        json={"name": "Acme", "webhook": {"url": url}})
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "webhook.url"
        r = await c.get("/v1/apps/acme", headers=ADMIN)
        assert r.status_code == 404  # nothing half-written
        app = await create_app_with_key(c, "acme")
        r = await c.post("/v1/users/u1/devices", headers=app["headers"],
                         json={"platform": "webhook", "token": url})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "token"
    await container.close()
