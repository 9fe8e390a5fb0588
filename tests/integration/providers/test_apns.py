"""The APNs provider against a loopback double of Apple's HTTP/2 provider API (TLS, ES256
provider tokens checked with the public key): the adapter alone (headers, payload, error
mapping, the provider token's life cycle, a thousand streams on one connection), then end to
end through the HTTP API and the delivery worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import pytest
from h2.errors import ErrorCodes

from tests.conftest import ADMIN, drain
from tests.fakes.apns_double import ApnsDouble, Reply, make_signing_key
from tests.fakes.tls import loopback_tls
from tidings.adapters.providers.apns import ApnsProvider
from tidings.adapters.providers.options import ProviderOptions
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent, TargetInvalid

TEAM, KEY_ID, TOPIC = "TEAM123456", "KEY1234567", "com.example.app"
OPTIONS = ProviderOptions(timeout=1.0, max_concurrency=16, ssl_context=loopback_tls().client_context())


def token(i: int = 1) -> str:
    return f"{i:064x}"


@pytest.fixture(scope="module")
def signing_key() -> tuple[str, str]:
    return make_signing_key()


@pytest.fixture
async def apns(signing_key: tuple[str, str]) -> AsyncIterator[ApnsDouble]:
    async with ApnsDouble(team_id=TEAM, key_id=KEY_ID, public_key=signing_key[1], topic=TOPIC) as d:
        yield d


def settings(apns: ApnsDouble, private_key: str, **extra: Any) -> dict[str, Any]:
    return {"team_id": TEAM, "key_id": KEY_ID, "private_key": private_key, "topic": TOPIC,
            "environment": "production", "endpoint": apns.url, **extra}


@pytest.fixture
def make(apns: ApnsDouble, signing_key: tuple[str, str], closing: Any) -> Any:
    def build(options: ProviderOptions = OPTIONS, **extra: Any) -> ApnsProvider:
        return closing(ApnsProvider(
            settings(apns, extra.pop("private_key", signing_key[0]), **extra), options))

    return build


@pytest.fixture
def provider(make: Any) -> ApnsProvider:
    return make()


def msg(target: str | None = None, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {"title": "Hello", "body": "World"}
    values.update(fields)
    target = target or token()
    return OutboundMessage(delivery_id=f"d-{target[-6:]}", notification_id="n1", app_id="acme",
                           user_id="u1", channel="push", provider="apns", target=target,
                           platform="ios", **values)


# -- the notification -------------------------------------------------------------------------

async def test_an_alert_is_sent_and_the_apns_id_kept(provider, apns):
    (result,) = await provider.send([msg(data={"invoice": 42}, priority="high", ttl=600)])
    (push,) = apns.received
    assert isinstance(result, Sent) and result.message_id == push.apns_id
    assert push.status == 200 and push.token == token()
    # No sound, badge or anything else unless the overrides ask for it.
    assert push.payload == {"aps": {"alert": {"title": "Hello", "body": "World"}}, "invoice": 42}
    h = push.headers
    assert (h["apns-topic"], h["apns-push-type"], h["apns-priority"]) == (TOPIC, "alert", "10")
    assert abs(int(h["apns-expiration"]) - (time.time() + 600)) <= 2
    assert "apns-collapse-id" not in h


async def test_data_only_is_a_background_push_at_priority_5(provider, apns):
    (result,) = await provider.send([msg(title=None, body=None, data={"sync": True},
                                         priority="high")])
    assert isinstance(result, Sent), result
    (push,) = apns.received
    assert push.payload == {"aps": {"content-available": 1}, "sync": True}
    assert (push.headers["apns-push-type"], push.headers["apns-priority"]) == ("background", "5")


async def test_priority_ttl_and_collapse_key(provider, apns):
    results = await provider.send([msg(token(1), priority="normal", ttl=0, collapse_key="score"),
                                   msg(token(2), ttl=None)])
    assert all(isinstance(r, Sent) for r in results), results
    first, second = sorted(apns.received, key=lambda p: p.token)
    assert first.headers["apns-priority"] == "5" and first.headers["apns-expiration"] == "0"
    assert first.headers["apns-collapse-id"] == "score"
    assert "apns-expiration" not in second.headers


async def test_a_collapse_key_over_64_bytes_fails_without_sending(provider, apns):
    (result,) = await provider.send([msg(collapse_key="k" * 65)])
    assert isinstance(result, Failed) and "64 bytes" in result.reason
    assert apns.received == []


async def test_overrides_are_merged_over_what_was_built(provider, apns):
    overrides = {"apns": {
        "payload": {"aps": {"sound": "default", "badge": 3, "alert": {"subtitle": "Sub"}},
                    "deep": {"b": 2}},
        "headers": {"apns-priority": "5", "APNS-Collapse-Id": "c-1"},
    }}
    (result,) = await provider.send([msg(data={"deep": {"a": 1}}, priority="high",
                                         overrides=overrides)])
    assert isinstance(result, Sent), result
    (push,) = apns.received
    assert push.payload == {"aps": {"alert": {"title": "Hello", "body": "World", "subtitle": "Sub"},
                                    "sound": "default", "badge": 3},
                            "deep": {"a": 1, "b": 2}}
    assert push.headers["apns-priority"] == "5" and push.headers["apns-collapse-id"] == "c-1"


async def test_an_apns_id_given_in_the_overrides_is_the_message_id(provider, apns):
    given = "123e4567-e89b-12d3-a456-426614174000"
    (result,) = await provider.send([msg(overrides={"apns": {"headers": {"apns-id": given}}})])
    assert result == Sent(given)


async def test_overriding_the_push_type_to_background_lowers_the_priority(provider, apns):
    overrides = {"apns": {"headers": {"apns-push-type": "background"},
                          "payload": {"aps": {"alert": None, "content-available": 1}}}}
    (result,) = await provider.send([msg(priority="high", overrides=overrides)])
    assert isinstance(result, Sent), result
    (push,) = apns.received
    assert push.payload == {"aps": {"content-available": 1}}
    assert (push.headers["apns-push-type"], push.headers["apns-priority"]) == ("background", "5")


@pytest.mark.parametrize("overrides", [
    {"apns": {"headers": {"authorization": "bearer x"}}},
    {"apns": {"headers": {"apns-topic": "a\r\nb"}}},
    {"apns": {"payload": {"aps": "not an object"}}},
    {"apns": "nonsense"},
])
async def test_unusable_overrides_fail_without_sending(provider, apns, overrides):
    (result,) = await provider.send([msg(overrides=overrides)])
    assert isinstance(result, Failed), result
    assert apns.received == []


async def test_the_4kb_payload_limit_is_checked_before_sending(provider, apns):
    empty = len(orjson.dumps({"aps": {"alert": {"title": "Hello", "body": "World"}}, "blob": ""}))
    fits = msg(token(1), data={"blob": "x" * (4096 - empty)})
    too_big = msg(token(2), data={"blob": "x" * (4097 - empty)})
    sent, refused = await provider.send([fits, too_big])
    assert isinstance(sent, Sent), sent
    assert isinstance(refused, Failed) and "payload too large: 4097 bytes" in refused.reason
    assert [p.token for p in apns.received] == [token(1)]


@pytest.mark.parametrize("target", ["not-hex-at-all", "abc", "zz", "12 34", "0x1234"])
async def test_a_token_that_is_not_hex_is_invalid_without_sending(provider, apns, target):
    (result,) = await provider.send([msg(target)])
    assert isinstance(result, TargetInvalid) and "BadDeviceToken" in result.reason
    assert apns.received == []


# -- APNs's answers -----------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "reason", "expected"), [
    (410, "Unregistered", TargetInvalid("Unregistered")),
    (410, "ExpiredToken", TargetInvalid("ExpiredToken")),
    (400, "BadDeviceToken", TargetInvalid("BadDeviceToken")),
    (400, "DeviceTokenNotForTopic", TargetInvalid("DeviceTokenNotForTopic")),
    (400, "BadTopic", Failed("BadTopic (HTTP 400)")),
    (403, "InvalidProviderToken", Failed("InvalidProviderToken (HTTP 403)")),
    (413, "PayloadTooLarge", Failed("PayloadTooLarge (HTTP 413)")),
    (405, "MethodNotAllowed", Failed("MethodNotAllowed (HTTP 405)")),
    (429, "TooManyRequests", Retry("TooManyRequests (HTTP 429)")),
    (429, "TooManyProviderTokenUpdates", Retry("TooManyProviderTokenUpdates (HTTP 429)")),
    (500, "InternalServerError", Retry("InternalServerError (HTTP 500)")),
    (503, "ServiceUnavailable", Retry("ServiceUnavailable (HTTP 503)")),
])
async def test_each_answer_is_mapped(provider, apns, status, reason, expected):
    apns.script[token()] = Reply(status, reason)
    (result,) = await provider.send([msg()])
    assert result == expected


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(provider, apns, status):
    apns.script[token()] = Reply(status, "TooManyRequests", retry_after="120")
    (result,) = await provider.send([msg()])
    assert isinstance(result, Retry) and result.after == 120


async def test_the_double_really_checks_the_topic_and_the_token(make, apns):
    (wrong_topic,) = await make(topic="com.other.app").send([msg()])
    assert wrong_topic == Failed("TopicDisallowed (HTTP 400)")
    other_key, _ = make_signing_key()
    (wrong_key,) = await make(private_key=other_key).send([msg()])
    assert wrong_key == Failed("InvalidProviderToken (HTTP 403)")
    (wrong_kid,) = await make(key_id="OTHERKEY12").send([msg()])
    assert wrong_kid == Failed("InvalidProviderToken (HTTP 403)")


@pytest.mark.parametrize(("reply", "words"), [
    (Reply(400, body=b"<html>Bad Gateway</html>"), "without a readable reason"),
    (Reply(500, body=b'{"reason": "Internal'), "without a readable reason"),
    (Reply(200, reset=ErrorCodes.INTERNAL_ERROR), "StreamReset"),
    (Reply(200, drop=True), "ConnectionLost"),
    (Reply(200, goaway=True), "GoAway"),
    (Reply(200, delay=3.0), "RequestTimeout"),
])
async def test_transport_trouble_and_garbage_are_retried(make, apns, reply, words):
    provider = make(ProviderOptions(timeout=0.3, max_concurrency=4,
                                    ssl_context=loopback_tls().client_context()))
    apns.script[token(1)] = reply
    bad, = await provider.send([msg(token(1))])
    assert isinstance(bad, Retry) and words in bad.reason, bad
    del apns.script[token(1)]
    (good,) = await provider.send([msg(token(2))])  # the provider recovers on its own
    assert isinstance(good, Sent), good


async def test_an_unreachable_endpoint_is_a_retry(signing_key):
    provider = ApnsProvider({"team_id": TEAM, "key_id": KEY_ID, "private_key": signing_key[0],
                             "topic": TOPIC, "endpoint": "https://127.0.0.1:9"}, OPTIONS)
    (result,) = await provider.send([msg()])
    assert isinstance(result, Retry) and "ConnectFailed" in result.reason
    await provider.close()


async def test_an_unusable_signing_key_fails_every_message_without_sending(make, apns):
    results = await make(private_key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"
                         ).send([msg(token(1)), msg(token(2))])
    assert all(isinstance(r, Failed) and "signing key" in r.reason for r in results)
    assert apns.received == [] and apns.connections == 0


async def test_production_and_sandbox_hosts():
    key, _ = make_signing_key()
    base = {"team_id": TEAM, "key_id": KEY_ID, "private_key": key, "topic": TOPIC}
    assert ApnsProvider(base, OPTIONS)._origin == "https://api.push.apple.com"
    sandbox = ApnsProvider({**base, "environment": "sandbox"}, OPTIONS)
    assert sandbox._origin == "https://api.sandbox.push.apple.com"


# -- the provider token -----------------------------------------------------------------------

async def test_the_provider_token_is_what_apple_expects(provider, apns, signing_key):
    await provider.send([msg()])
    (value,) = apns.tokens_seen
    assert jwt.get_unverified_header(value) == {"alg": "ES256", "kid": KEY_ID}
    claims = jwt.decode(value, signing_key[1], algorithms=["ES256"])
    assert claims["iss"] == TEAM and abs(claims["iat"] - time.time()) <= 2


async def test_the_provider_token_is_reused_for_55_minutes(provider, apns):
    start = time.time()
    provider.clock = apns.clock = lambda: start
    for i in range(3):
        assert isinstance((await provider.send([msg(token(i + 1))]))[0], Sent)
    provider.clock = apns.clock = lambda: start + 54 * 60
    assert isinstance((await provider.send([msg()]))[0], Sent)
    assert len(apns.tokens_seen) == 1
    provider.clock = apns.clock = lambda: start + 56 * 60
    assert isinstance((await provider.send([msg()]))[0], Sent)
    assert len(apns.tokens_seen) == 2
    assert jwt.decode(apns.tokens_seen[1], options={"verify_signature": False})["iat"] == \
        int(start + 56 * 60)


async def test_an_expired_provider_token_is_renewed_once_and_retried(provider, apns):
    assert isinstance((await provider.send([msg()]))[0], Sent)
    apns.expire_tokens()
    results = await provider.send([msg(token(i + 1)) for i in range(40)])
    # The first sixteen were in flight together with the old token; the rest went with the new.
    refused, sent = results[:OPTIONS.max_concurrency], results[OPTIONS.max_concurrency:]
    assert all(isinstance(r, Retry) and r.reason.startswith("ExpiredProviderToken") for r in refused)
    assert all(isinstance(r, Sent) for r in sent), sent
    assert len(apns.tokens_seen) == 2  # sixteen refusals, one new token
    results = await provider.send([msg(token(i + 1)) for i in range(16)])
    assert all(isinstance(r, Sent) for r in results), results
    assert len(apns.tokens_seen) == 2


# -- concurrency ------------------------------------------------------------------------------

async def test_a_thousand_messages_go_concurrently_over_one_tls_connection(make, apns):
    provider = make(ProviderOptions(timeout=10.0, max_concurrency=1000,
                                    ssl_context=loopback_tls().client_context()))
    apns.delay = 0.2  # each answer takes a while: only concurrency makes this quick
    apns.script[token(500)] = Reply(410, "Unregistered")
    started = time.monotonic()
    results = await provider.send([msg(token(i)) for i in range(1, 1001)])
    elapsed = time.monotonic() - started
    assert isinstance(results[499], TargetInvalid)
    sent = [r for i, r in enumerate(results) if i != 499]
    assert all(isinstance(r, Sent) for r in sent)
    assert len({r.message_id for r in sent}) == 999
    assert len(apns.received) == 1000 and apns.connections == 1
    assert apns.server.max_open >= 500 and apns.server.protocol_errors == []
    assert elapsed < 50 * 0.2, elapsed  # far from a thousand round trips one after another


async def test_results_keep_the_order_of_the_batch(provider, apns):
    apns.script[token(2)] = Reply(410, "Unregistered", delay=0.1)  # answered last
    results = await provider.send([msg(token(i)) for i in range(1, 5)])
    assert [type(r) for r in results] == [Sent, TargetInvalid, Sent, Sent]


async def test_close_releases_the_connection_and_a_later_send_reopens_it(provider, apns):
    await provider.send([msg()])
    await provider.close()
    await asyncio.sleep(0.05)
    assert len(apns.server._open) == 0
    assert isinstance((await provider.send([msg()]))[0], Sent)
    assert apns.connections == 2


# -- end to end: HTTP API, worker, store ------------------------------------------------------

@pytest.fixture
def provider_options() -> ProviderOptions:
    return ProviderOptions(timeout=3.0, max_concurrency=16, allow_private_webhooks=True,
                           public_url="http://tidings.test",
                           ssl_context=loopback_tls().client_context())


async def configure(client, apns: ApnsDouble, private_key: str) -> None:
    body = {"name": "Acme", "providers": {"apns": settings(apns, private_key)},
            "routing": {"push": {"ios": "apns"}}}
    r = await client.put("/v1/apps/acme", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text


async def pair(client, app, device_token: str, user: str = "u1") -> dict[str, Any]:
    r = await client.post(f"/v1/users/{user}/devices",
                          json={"platform": "ios", "token": device_token}, headers=app["headers"])
    assert r.status_code in (200, 201), r.text
    return r.json()


async def notify(client, app, **body: Any) -> dict[str, Any]:
    payload = {"to": {"user_id": "u1"}, "channels": ["push"], "title": "Invoice", "body": "Due"}
    payload.update(body)
    r = await client.post("/v1/notifications", json=payload, headers=app["headers"])
    assert r.status_code == 202, r.text
    (item,) = r.json()["items"]
    return item


async def delivery(client, app, notification_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/notifications/{notification_id}", headers=app["headers"])
    assert r.status_code == 200, r.text
    (d,) = r.json()["deliveries"]
    return d


async def device_of(client, app, device_id: str, user: str = "u1") -> dict[str, Any]:
    r = await client.get(f"/v1/users/{user}/devices", headers=app["headers"])
    assert r.status_code == 200, r.text
    return next(d for d in r.json()["items"] if d["id"] == device_id)


async def test_e2e_a_push_is_sent_through_apns(client, acme, container, apns, signing_key):
    await configure(client, apns, signing_key[0])
    device = await pair(client, acme, token(7))
    n = await notify(client, acme, data={"invoice": 42}, priority="high", ttl=600)
    assert await drain(container) == 1
    d = await delivery(client, acme, n["id"])
    (push,) = apns.received
    assert d["status"] == "sent" and d["provider"] == "apns" and d["target"] == device["id"]
    assert d["provider_message_id"] == push.apns_id
    assert push.token == token(7) and push.headers["apns-priority"] == "10"
    assert push.payload == {"aps": {"alert": {"title": "Invoice", "body": "Due"}}, "invoice": 42}


async def test_e2e_an_unregistered_token_disables_the_device(client, acme, container, apns,
                                                             signing_key):
    await configure(client, apns, signing_key[0])
    device = await pair(client, acme, token(8))
    apns.script[token(8)] = Reply(410, "Unregistered")
    n = await notify(client, acme)
    assert await drain(container) == 1
    d = await delivery(client, acme, n["id"])
    assert d["status"] == "failed" and d["error"] == "target invalid: Unregistered"
    listed = await device_of(client, acme, device["id"])
    assert listed["enabled"] is False and listed["disabled_reason"] == "Unregistered"


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"),
                                                (503, "ServiceUnavailable")])
async def test_e2e_a_busy_apns_is_retried_after_retry_after(client, acme, container, apns,
                                                            signing_key, clock, status, reason):
    await configure(client, apns, signing_key[0])
    await pair(client, acme, token(9))
    apns.script[token(9)] = Reply(status, reason, retry_after="120")
    n = await notify(client, acme)
    assert await drain(container) == 1
    d = await delivery(client, acme, n["id"])
    assert (d["status"], d["attempts"], d["error"]) == ("pending", 1, f"{reason} (HTTP {status})")
    del apns.script[token(9)]
    clock.advance(119)
    assert await container.dispatcher.run_once() == 0
    clock.advance(1)
    assert await container.dispatcher.run_once() == 1
    d = await delivery(client, acme, n["id"])
    assert (d["status"], d["attempts"]) == ("sent", 2)
    assert d["provider_message_id"] == apns.ok()[-1].apns_id


async def test_e2e_a_refused_notification_fails_and_keeps_the_device(client, acme, container, apns,
                                                                    signing_key):
    await configure(client, apns, signing_key[0])
    device = await pair(client, acme, token(10))
    apns.script[token(10)] = Reply(400, "BadTopic")
    n = await notify(client, acme)
    assert await drain(container) == 1
    d = await delivery(client, acme, n["id"])
    assert (d["status"], d["error"]) == ("failed", "BadTopic (HTTP 400)")
    assert (await device_of(client, acme, device["id"]))["enabled"] is True
