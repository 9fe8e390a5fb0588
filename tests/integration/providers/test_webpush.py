"""The `webpush` provider against a loopback push service that checks VAPID and decrypts the
message as a browser would: first the adapter alone, then end to end through the HTTP API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.conftest import create_app_with_key
from tests.fakes.tls import loopback_tls
from tests.fakes.webpush_double import PushService, VapidKeys, b64url, decrypt, unb64url
from tests.integration.providers.conftest import (
    assert_due_after,
    delivery,
    notify_and_deliver,
    register_device,
)
from tidings.adapters.providers.options import ProviderOptions
from tidings.adapters.providers.ssrf import PublicOnlyResolver, is_public
from tidings.adapters.providers.webpush import (
    MAX_PLAINTEXT,
    WebPushProvider,
    encrypt,
    load_vapid_key,
    parse_subscription,
    payload,
)
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent, TargetInvalid
from tidings.domain.ids import new_id

SUBJECT = "mailto:ops@acme.test"


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    service = await PushService().start()
    yield service
    await service.close()


@pytest.fixture
def vapid() -> VapidKeys:
    return VapidKeys()


@pytest.fixture
def provider_options(provider_options: ProviderOptions) -> ProviderOptions:
    return replace(provider_options, ssl_context=loopback_tls().client_context())


@pytest.fixture
def make_provider(provider_options: ProviderOptions, vapid: VapidKeys, closing: Any) -> Any:
    def make(key: str | None = None, **options: Any) -> WebPushProvider:
        config = {"vapid_private_key": key or vapid.pem, "vapid_subject": SUBJECT}
        return closing(WebPushProvider(config, replace(provider_options, **options)))

    return make


@pytest.fixture
def webpush(make_provider: Any) -> WebPushProvider:
    return make_provider()


def message(target: str, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": new_id(), "notification_id": new_id(), "app_id": "acme", "user_id": "u1",
        "channel": "push", "provider": "webpush", "target": target, "platform": "web",
        "title": "Hi", "body": "there", "data": {"k": "v"}}
    values.update(fields)
    return OutboundMessage(**values)


# --- the message on the wire ----------------------------------------------------------------
async def test_the_browser_decrypts_what_was_sent(webpush, push_service, vapid):
    sub = push_service.subscribe()
    m = message(sub.token, priority="high", ttl=60, collapse_key="news")
    (result,) = await webpush.send([m])
    assert push_service.errors == []
    (got,) = sub.received
    assert result == Sent(got.message_id)
    assert got.payload == {"title": "Hi", "body": "there", "data": {"k": "v"},
                           "notification_id": m.notification_id, "tag": "news"}
    assert (got.ttl, got.urgency, got.topic) == ("60", "high", "news")
    assert got.claims["aud"] == f"https://127.0.0.1:{push_service.port}"
    assert got.claims["sub"] == SUBJECT
    assert time.time() < got.claims["exp"] <= time.time() + 24 * 3600
    assert got.vapid_key == b64url(vapid.public)


async def test_defaults_four_weeks_normal_urgency_no_topic(webpush, push_service):
    sub = push_service.subscribe()
    (result,) = await webpush.send([message(sub.token, title=None, data={})])
    assert isinstance(result, Sent)
    (got,) = sub.received
    assert (got.ttl, got.urgency, got.topic) == ("2419200", "normal", None)
    assert "title" not in got.payload and "tag" not in got.payload


def test_encryption_matches_rfc_8291_example():
    """RFC 8291 section 5, to the byte; the double's decryption reads it back."""
    from cryptography.hazmat.primitives.asymmetric import ec

    sub = parse_subscription(json.dumps({"endpoint": "https://push.example/x", "keys": {
        "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}))
    body = encrypt(b"When I grow up, I want to be a watermelon", sub,
                   sender=load_vapid_key("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"),
                   salt=unb64url("DGv6ra1nlYgDCS1FRnbzlw"))
    assert b64url(body) == (
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6Tlz"
        "AC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    ua = ec.derive_private_key(int.from_bytes(unb64url("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), "big"),
                               ec.SECP256R1())
    assert decrypt(body, ua, sub.auth) == b"When I grow up, I want to be a watermelon"


async def test_overrides_merge_into_payload_and_headers(webpush, push_service):
    sub = push_service.subscribe()
    long_key = "a collapse key that is far too long for a Topic header"
    m = message(sub.token, collapse_key=long_key, overrides={"webpush": {
        "notification": {"icon": "/i.png", "data": {"url": "/x"}},
        "headers": {"urgency": "very-low", "TTL": "30", "Authorization": "ignored"}}})
    (result,) = await webpush.send([m])
    assert isinstance(result, Sent), result
    (got,) = sub.received
    assert got.payload["icon"] == "/i.png"
    assert got.payload["data"] == {"k": "v", "url": "/x"}
    assert got.payload["tag"] == long_key
    assert (got.ttl, got.urgency) == ("30", "very-low")
    assert got.topic is not None and len(got.topic) == 32
    (again,) = await webpush.send([message(sub.token, collapse_key=long_key)])
    assert isinstance(again, Sent) and sub.received[1].topic == got.topic


async def test_a_bad_override_fails_without_a_request(webpush, push_service):
    sub = push_service.subscribe()
    (result,) = await webpush.send([message(sub.token, overrides={"webpush": {"headers": {"Urgency": "asap"}}})])
    assert isinstance(result, Failed) and "Urgency" in result.reason
    assert push_service.requests == 0


async def test_oversize_payload_fails_without_a_request_and_the_largest_one_goes(webpush, push_service):
    sub = push_service.subscribe()
    base = message(sub.token, body="")
    filler = MAX_PLAINTEXT - len(orjson.dumps(payload(base)))
    largest = replace(base, body="x" * filler)
    too_big = replace(base, body="x" * (filler + 1))
    (result,) = await webpush.send([too_big])
    assert isinstance(result, Failed) and str(MAX_PLAINTEXT) in result.reason
    assert push_service.requests == 0
    (result,) = await webpush.send([largest])
    assert isinstance(result, Sent), result
    assert push_service.errors == [] and len(sub.received[0].payload["body"]) == filler


# --- VAPID ----------------------------------------------------------------------------------
async def test_raw_key_and_a_subscription_restricted_to_it(make_provider, push_service, vapid):
    sub = push_service.subscribe(application_server_key=vapid.public)
    (result,) = await make_provider(vapid.raw).send([message(sub.token)])
    assert isinstance(result, Sent), result
    assert sub.received[0].vapid_key == b64url(vapid.public)


async def test_another_key_than_the_subscription_was_made_with_fails(make_provider, push_service, vapid):
    sub = push_service.subscribe(application_server_key=vapid.public)
    (result,) = await make_provider(VapidKeys().pem).send([message(sub.token)])
    assert isinstance(result, Failed) and "VAPID" in result.reason and "403" in result.reason
    assert sub.received == [] and len(push_service.errors) == 1


async def test_one_jwt_per_origin_renewed_near_expiry(webpush, push_service):
    a, b = push_service.subscribe(), push_service.subscribe()
    other_origin = push_service.subscribe(host="localhost")
    results = await webpush.send([message(a.token), message(b.token), message(other_origin.token)])
    assert all(isinstance(r, Sent) for r in results), results
    assert a.received[0].authorization == b.received[0].authorization
    assert other_origin.received[0].claims["aud"] == f"https://localhost:{push_service.port}"
    assert other_origin.received[0].authorization != a.received[0].authorization
    assert webpush.vapid is not None
    webpush.vapid.clock = lambda: time.time() + 11.5 * 3600
    (result,) = await webpush.send([message(a.token)])
    assert isinstance(result, Sent), result
    assert a.received[1].authorization != a.received[0].authorization
    assert push_service.errors == []


def p384_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


@pytest.mark.parametrize("key", ["not a key", "AAAA", p384_pem()])
async def test_an_unusable_vapid_key_fails_every_message(make_provider, push_service, key):
    sub = push_service.subscribe()
    results = await make_provider(key).send([message(sub.token)] * 2)
    assert all(isinstance(r, Failed) and "vapid_private_key" in r.reason for r in results)
    assert push_service.requests == 0


# --- answers --------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "headers", "kind", "after"), [
    (410, {}, TargetInvalid, None),
    (404, {}, TargetInvalid, None),
    (413, {}, Failed, None),
    (400, {}, Failed, None),
    (401, {}, Failed, None),
    (429, {"Retry-After": "120"}, Retry, 120.0),
    (500, {}, Retry, None),
    (503, {"Retry-After": "7"}, Retry, 7.0),
    (302, {"Location": "https://127.0.0.1:1/elsewhere"}, Retry, None),
])
async def test_each_answer_maps(webpush, push_service, status, headers, kind, after):
    sub = push_service.subscribe()
    sub.answer(status, {"reason": f"said {status}"}, headers)
    (result,) = await webpush.send([message(sub.token)])
    assert type(result) is kind, result
    assert str(status) in getattr(result, "reason", "")
    if kind is Retry:
        assert result.after == after
    if status != 302:
        assert f"said {status}" in result.reason
    assert sub.received == [] and sub.requests == 1


async def test_garbage_and_timeouts_are_retried(make_provider, push_service):
    webpush = make_provider(timeout=0.2)
    garbled, slow, fine = push_service.subscribe(), push_service.subscribe(), push_service.subscribe()
    garbled.answer_garbage()
    slow.answer_slowly(0.5)
    results = await webpush.send([message(garbled.token), message(slow.token), message(fine.token)])
    assert [type(r) for r in results] == [Retry, Retry, Sent], results
    assert garbled.id not in results[0].reason  # the endpoint's path is the subscription's secret
    assert all(r.after is None for r in results[:2])


async def test_a_batch_runs_concurrently_over_a_few_kept_alive_connections(make_provider, push_service):
    webpush = make_provider(max_concurrency=8)
    subs = [push_service.subscribe() for _ in range(40)]
    for sub in subs:
        sub.answer_slowly(0.1)
    started = time.perf_counter()
    results = await webpush.send([message(s.token) for s in subs])
    elapsed = time.perf_counter() - started
    assert all(isinstance(r, Sent) for r in results)
    assert elapsed < 40 * 0.1 / 2, elapsed  # sequential would take 4 s
    assert len(push_service.peers) <= 8
    assert len({r.message_id for r in results}) == 40


# --- who may be sent to ---------------------------------------------------------------------
@pytest.mark.parametrize("target", [
    "not json",
    "[]",
    '{"endpoint": "https://push.example/x"}',
    '{"endpoint": 3, "keys": {"p256dh": "x", "auth": "y"}}',
    '{"endpoint": "http://push.example/x", "keys": {"p256dh": "%(p)s", "auth": "%(a)s"}}',
    '{"endpoint": "https://push.example/x", "keys": {"p256dh": "%(p)s", "auth": "AAAA"}}',
    '{"endpoint": "https://push.example/x", "keys": {"p256dh": "BAAA%(a)s", "auth": "%(a)s"}}',
    '{"endpoint": "https://push.example/x", "keys": {"p256dh": "B%(bad)s", "auth": "%(a)s"}}',
    '{"endpoint": "https://push.example/x", "keys": {"p256dh": "%(p)s", "auth": "!!"}}',
])
async def test_a_malformed_subscription_is_an_invalid_target(webpush, push_service, target):
    good = push_service.subscribe().json["keys"]
    not_on_curve = b64url(b"\x04" + b"\x01" * 64)[1:]
    bad = target % {"p": good["p256dh"], "a": good["auth"], "bad": not_on_curve} if "%(" in target else target
    (result,) = await webpush.send([message(bad)])
    assert isinstance(result, TargetInvalid) and "malformed subscription" in result.reason, result
    assert push_service.requests == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_endpoints_are_refused_unless_allowed(make_provider, push_service, host):
    webpush = make_provider(allow_private_webhooks=False)
    sub = push_service.subscribe(host=host)
    (result,) = await webpush.send([message(sub.token)])
    assert isinstance(result, TargetInvalid) and "private address" in result.reason, result
    assert push_service.requests == 0


def test_which_addresses_are_public():
    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111") and is_public("::ffff:8.8.8.8")
    for private in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1",
                    "::1", "fc00::1", "fe80::1%eth0", "::ffff:127.0.0.1", "224.0.0.1", "0.0.0.0",
                    "2002:7f00:1::1", "2002:a9fe:a9fe::1"):
        assert not is_public(private), private


async def test_the_resolver_keeps_only_public_addresses():
    class Inner:
        async def resolve(self, host, port, family):
            return [{"hostname": host, "host": h, "port": port, "family": family, "proto": 0, "flags": 0}
                    for h in ("10.0.0.7", "93.184.215.14")]

        async def close(self):
            pass

    resolver = PublicOnlyResolver(Inner())  # type: ignore[arg-type]
    assert [r["host"] for r in await resolver.resolve("push.example", 443)] == ["93.184.215.14"]
    await resolver.close()


# --- end to end through the HTTP API --------------------------------------------------------
INVOICE = {"title": "Invoice", "body": "is ready", "data": {"invoice": "42"}, "ttl": 3600,
           "priority": "high"}


async def web_app(client, vapid: VapidKeys) -> dict[str, Any]:
    return await create_app_with_key(
        client, "acme", providers={"webpush": {"vapid_private_key": vapid.pem, "vapid_subject": SUBJECT}},
        routing={"push": {"web": "webpush"}})


async def test_e2e_sent_through_the_api(client, container, push_service, vapid):
    app = await web_app(client, vapid)
    sub = push_service.subscribe(application_server_key=vapid.public)
    device = await register_device(client, app, "web", sub.json)
    assert device["provider"] == "webpush"
    n, d = await notify_and_deliver(client, container, app, **INVOICE)
    assert (d["status"], d["provider"], d["target"]) == ("sent", "webpush", device["id"])
    (got,) = sub.received
    assert got.payload == {"title": "Invoice", "body": "is ready", "data": {"invoice": "42"},
                           "notification_id": n["id"]}
    assert (got.ttl, got.urgency) == ("3600", "high")
    assert d["provider_message_id"] == got.message_id
    assert push_service.errors == []


async def test_e2e_gone_subscription_disables_the_device(client, container, push_service, vapid):
    app = await web_app(client, vapid)
    sub = push_service.subscribe()
    await register_device(client, app, "web", sub.json)
    sub.answer(410, {"reason": "unsubscribed"})
    _, d = await notify_and_deliver(client, container, app, **INVOICE)
    assert d["status"] == "failed" and "410" in d["error"] and "target invalid" in d["error"]
    r = await client.get("/v1/users/u1/devices", headers=app["headers"])
    (dev,) = r.json()["items"]
    assert dev["enabled"] is False


async def test_e2e_429_waits_for_retry_after(client, container, push_service, vapid, clock):
    app = await web_app(client, vapid)
    sub = push_service.subscribe()
    await register_device(client, app, "web", sub.json)
    sub.answer(429, {"reason": "slow down"}, {"Retry-After": "120"})
    n, d = await notify_and_deliver(client, container, app, **INVOICE)
    assert (d["status"], d["attempts"]) == ("pending", 1) and "429" in d["error"]
    await assert_due_after(container, clock, 120)
    d = await delivery(client, app, n["id"])
    assert (d["status"], d["attempts"]) == ("sent", 2)
    assert len(sub.received) == 1 and sub.requests == 2


async def test_e2e_413_fails_for_good(client, container, push_service, vapid):
    app = await web_app(client, vapid)
    sub = push_service.subscribe()
    await register_device(client, app, "web", sub.json)
    sub.answer(413, {"reason": "too big"})
    _, d = await notify_and_deliver(client, container, app, **INVOICE)
    assert d["status"] == "failed" and "413" in d["error"]
    r = await client.get("/v1/users/u1/devices", headers=app["headers"])
    assert r.json()["items"][0]["enabled"] is True
