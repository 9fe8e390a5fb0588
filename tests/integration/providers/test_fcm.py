"""The FCM HTTP v1 provider against a loopback double of Google's token endpoint and FCM: the
adapter alone (payload, error mapping, access-token life cycle, concurrency), then end to end
through the HTTP API and the delivery worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from tests.conftest import ADMIN
from tests.fakes.fcm_double import FcmDouble, generate_private_key, make_service_account
from tests.integration.providers.conftest import (
    assert_due_after,
    delivery,
    device_of,
    notify_and_deliver,
    register_device,
)
from tidings.adapters.providers.fcm import FcmProvider
from tidings.adapters.providers.google_auth import FIREBASE_MESSAGING_SCOPE, ServiceAccountTokens
from tidings.adapters.providers.options import ProviderOptions
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent, TargetInvalid

OPTIONS = ProviderOptions(timeout=0.5, max_concurrency=8)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fcm() -> AsyncIterator[FcmDouble]:
    async with FcmDouble() as double:
        yield double


@pytest.fixture
def account(fcm: FcmDouble) -> dict[str, Any]:
    return fcm.service_account()


@pytest.fixture
def make(fcm: FcmDouble, account: dict[str, Any], closing: Any) -> Any:
    def build(options: ProviderOptions = OPTIONS, **kwargs: Any) -> FcmProvider:
        config = {"credentials": kwargs.pop("credentials", account), "endpoint": fcm.url}
        return closing(FcmProvider(config, options, **kwargs))

    return build


@pytest.fixture
def provider(make: Any) -> FcmProvider:
    return make()


def msg(token: str = "tok-1", **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {"title": "Hello", "body": "World"}
    values.update(fields)
    return OutboundMessage(delivery_id=f"d-{token}", notification_id="n1", app_id="acme",
                           user_id="u1", channel="push", provider="fcm", target=token,
                           platform="android", **values)


# -- the message ------------------------------------------------------------------------------

async def test_sends_and_keeps_the_message_name(provider, fcm):
    (result,) = await provider.send([msg()])
    assert isinstance(result, Sent)
    assert result.message_id.startswith("projects/tidings-test/messages/0:")
    (received,) = fcm.received
    assert received["token"] == "tok-1"
    assert received["notification"] == {"title": "Hello", "body": "World"}
    assert "data" not in received and fcm.rejected == []


async def test_data_values_become_strings(provider, fcm):
    data = {"s": "x", "n": 12, "f": 1.5, "b": True, "none": None, "o": {"a": [1, "2"]}}
    assert isinstance((await provider.send([msg(data=data)]))[0], Sent)
    assert fcm.received[0]["data"] == {"s": "x", "n": "12", "f": "1.5", "b": "true",
                                       "none": "null", "o": '{"a":[1,"2"]}'}


async def test_ttl_priority_and_collapse_key_reach_every_platform(provider, fcm):
    before = int(time.time())
    await provider.send([msg("a", ttl=3600, priority="high", collapse_key="score"),
                         msg("b"), msg("c", ttl=0)])
    a, b, c = (fcm.to(t)[0] for t in "abc")
    assert a["android"] == {"priority": "high", "ttl": "3600s", "collapse_key": "score"}
    apns = a["apns"]["headers"]
    assert (apns["apns-priority"], apns["apns-collapse-id"]) == ("10", "score")
    assert before + 3600 <= int(apns["apns-expiration"]) <= int(time.time()) + 3600
    assert a["webpush"] == {"headers": {"Urgency": "high", "TTL": "3600", "Topic": "score"}}
    assert b["android"] == {"priority": "normal"}
    assert b["apns"] == {"headers": {"apns-priority": "5"}}
    assert b["webpush"] == {"headers": {"Urgency": "normal"}}
    assert c["android"]["ttl"] == "0s" and c["apns"]["headers"]["apns-expiration"] == "0"
    assert c["webpush"]["headers"]["TTL"] == "0"


async def test_overrides_are_merged_over_what_was_built(provider, fcm):
    overrides = {
        "android": {"priority": "normal", "notification": {"channel_id": "billing"}},
        "apns": {"headers": {"apns-push-type": "alert"}, "payload": {"aps": {"sound": "default"}}},
        "webpush": {"headers": {"TTL": "60"}, "fcm_options": {"link": "https://acme.test/x"}},
    }
    m = msg(ttl=3600, priority="high", overrides=overrides)
    assert isinstance((await provider.send([m]))[0], Sent)
    got = fcm.received[0]
    assert got["android"] == {"priority": "normal", "ttl": "3600s",
                              "notification": {"channel_id": "billing"}}
    assert got["apns"]["headers"]["apns-priority"] == "10"
    assert got["apns"]["headers"]["apns-push-type"] == "alert"
    assert "apns-expiration" in got["apns"]["headers"]
    assert got["apns"]["payload"] == {"aps": {"sound": "default"}}
    assert got["webpush"]["headers"] == {"Urgency": "high", "TTL": "60"}
    assert got["webpush"]["fcm_options"] == {"link": "https://acme.test/x"}
    assert overrides["apns"] == {"headers": {"apns-push-type": "alert"},
                                 "payload": {"aps": {"sound": "default"}}}


async def test_a_payload_fcm_refuses_fails_for_good(provider, fcm):
    (result,) = await provider.send([msg(overrides={"android": {"ttl": "an hour"}})])
    assert isinstance(result, Failed) and "ttl" in result.reason
    assert fcm.received == []


# -- FCM's answers ----------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "extra", "expected", "reason", "after"), [
    ("unregistered", {}, TargetInvalid, "UNREGISTERED", None),
    ("invalid_token", {}, TargetInvalid, "not a valid FCM registration token", None),
    ("sender_id_mismatch", {}, TargetInvalid, "SENDER_ID_MISMATCH", None),
    ("invalid_argument", {}, Failed, "INVALID_ARGUMENT", None),
    ("quota", {"retry_after": "120"}, Retry, "QUOTA_EXCEEDED", 120.0),
    ("quota", {}, Retry, "QUOTA_EXCEEDED", None),
    ("unavailable", {"retry_after": "30"}, Retry, "UNAVAILABLE", 30.0),
    ("internal", {}, Retry, "INTERNAL", None),
    ("third_party_auth", {}, Retry, "THIRD_PARTY_AUTH_ERROR", None),
    ("garbage", {}, Retry, "502 without a JSON error", None),
    ("garbage", {"status": 200}, Retry, "200 without a message name", None),
    ("truncated", {}, Retry, "ClientPayloadError", None),
    ("slow", {}, Retry, "TimeoutError", None),
])
async def test_each_answer_is_mapped(provider, fcm, kind, extra, expected, reason, after):
    fcm.fail("bad", kind, **extra)
    results = await provider.send([msg("good-1"), msg("bad"), msg("good-2")])
    assert [type(r) for r in results] == [Sent, expected, Sent]
    assert reason in results[1].reason
    if expected is Retry:
        assert results[1].after == after
    assert [m["token"] for m in fcm.received] == ["good-1", "good-2"]


async def test_a_retried_message_goes_through_once_the_error_clears(provider, fcm):
    fcm.fail("tok", "unavailable", times=1)
    assert isinstance((await provider.send([msg("tok")]))[0], Retry)
    assert isinstance((await provider.send([msg("tok")]))[0], Sent)


# -- the access token -------------------------------------------------------------------------

async def test_the_assertion_is_what_google_expects(account):
    tokens = ServiceAccountTokens(account)
    assertion = tokens.assertion(now=int(time.time()))
    assert jwt.get_unverified_header(assertion) == {
        "alg": "RS256", "typ": "JWT", "kid": account["private_key_id"]}
    public = generate_private_key().public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(assertion, public, algorithms=["RS256"], audience=account["token_uri"])
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["iss"] == account["client_email"]
    assert claims["aud"] == account["token_uri"]
    assert claims["scope"] == FIREBASE_MESSAGING_SCOPE
    assert claims["exp"] - claims["iat"] == 3600


async def test_the_token_is_fetched_once_and_reused(provider, fcm):
    for _ in range(3):
        assert all(isinstance(r, Sent) for r in await provider.send([msg("a"), msg("b")]))
    assert fcm.token_requests == 1 and fcm.send_requests == 6


async def test_the_token_is_refreshed_a_minute_before_it_expires(make, fcm):
    ticks = Ticks()
    provider = make(clock=ticks)
    await provider.send([msg()])
    ticks.now += 3600 - 61
    await provider.send([msg()])
    assert fcm.token_requests == 1
    ticks.now += 1
    assert isinstance((await provider.send([msg()]))[0], Sent)
    assert fcm.token_requests == 2


async def test_a_revoked_token_is_replaced_at_once(provider, fcm):
    await provider.send([msg()])
    fcm.revoke_tokens()  # as when Google revokes a token before it expires
    assert isinstance((await provider.send([msg()]))[0], Sent)
    assert fcm.token_requests == 2 and fcm.rejected == ["unauthenticated"]


async def test_a_token_revoked_mid_batch_costs_one_refresh(provider, fcm):
    fcm.delay = 0.02
    batch = asyncio.ensure_future(provider.send([msg(f"t{i}") for i in range(40)]))
    await fcm.wait_received(8)
    fcm.revoke_tokens()
    results = await batch
    assert all(isinstance(r, Sent) for r in results)
    assert "unauthenticated" in fcm.rejected and fcm.token_requests == 2
    assert sorted(m["token"] for m in fcm.received) == sorted(f"t{i}" for i in range(40))


async def test_a_401_twice_is_a_retry_with_a_fresh_token_next_time(provider, fcm):
    fcm.fail("tok", "unauthenticated", times=2)
    (result,) = await provider.send([msg("tok")])
    assert isinstance(result, Retry) and "UNAUTHENTICATED" in result.reason
    assert fcm.token_requests == 2
    assert isinstance((await provider.send([msg("tok")]))[0], Sent)
    assert fcm.token_requests == 3


async def test_a_short_lived_token_is_not_fetched_for_every_message(make, fcm):
    fcm.expires_in = 30
    ticks = Ticks()
    provider = make(clock=ticks)
    await provider.send([msg(f"t{i}") for i in range(20)])
    ticks.now += 14
    await provider.send([msg()])
    assert fcm.token_requests == 1
    ticks.now += 1
    await provider.send([msg()])
    assert fcm.token_requests == 2


async def test_concurrent_sends_share_one_token_request(provider, fcm):
    fcm.token_delay = 0.05
    results = await asyncio.gather(*(provider.send([msg(f"t{i}")]) for i in range(50)))
    assert all(isinstance(r, Sent) for (r,) in results)
    assert fcm.token_requests == 1 and len(fcm.received) == 50


@pytest.mark.parametrize(("failure", "reason"), [
    ("error", "400 invalid_grant: Invalid JWT Signature."),
    ("unavailable", "503 internal_failure"),
    ("garbage", "502 without JSON"),
    ("slow", "TimeoutError"),
])
async def test_a_failing_token_endpoint_retries_the_batch(provider, fcm, failure, reason):
    fcm.token_failure = failure
    fcm.slow_seconds = 2.0
    results = await asyncio.gather(*(provider.send([msg("a"), msg("b")]) for _ in range(10)))
    flat = [r for batch in results for r in batch]
    assert all(isinstance(r, Retry) and reason in r.reason for r in flat), flat[0]
    assert fcm.token_requests == 1 and fcm.send_requests == 0
    fcm.token_failure = None
    assert all(isinstance(r, Sent) for r in await provider.send([msg("a"), msg("b")]))


async def test_a_key_google_does_not_know_is_refused(make, fcm, account):
    stranger = make_service_account(account["token_uri"], key=generate_private_key())
    stranger["client_email"] = account["client_email"]  # right account, wrong key
    stranger["private_key_id"] = account["private_key_id"]
    (result,) = await make(credentials=stranger).send([msg()])
    assert isinstance(result, Retry) and "Invalid JWT Signature" in result.reason
    assert fcm.issued == {} and fcm.send_requests == 0


async def test_an_unreadable_private_key_is_a_retry_not_a_crash(make, fcm, account):
    broken = {**account, "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}
    (result,) = await make(credentials=broken).send([msg()])
    assert isinstance(result, Retry) and "private key" in result.reason


async def test_an_unreachable_endpoint_is_a_retry(make, fcm, account):
    await fcm.close()
    (result,) = await make().send([msg()])
    assert isinstance(result, Retry) and "unreachable" in result.reason


# -- concurrency and connections --------------------------------------------------------------

async def test_a_batch_is_sent_concurrently_within_the_bound(make, fcm):
    provider = make(ProviderOptions(timeout=2.0, max_concurrency=8))
    fcm.delay = 0.05
    started = time.perf_counter()
    results = await provider.send([msg(f"t{i}") for i in range(40)])
    elapsed = time.perf_counter() - started
    assert all(isinstance(r, Sent) for r in results)
    assert [m["token"] for m in fcm.received] != [] and fcm.max_in_flight == 8
    assert elapsed < 40 * 0.05 / 2  # far from one request after the other
    assert len(fcm.peers) <= 8  # keep-alive: connections are reused, not one per message
    await provider.send([msg(f"u{i}") for i in range(16)])
    assert len(fcm.peers) <= 8


async def test_results_keep_the_order_of_the_batch(provider, fcm):
    fcm.fail("t3", "unregistered")
    fcm.fail("t7", "invalid_argument")
    results = await provider.send([msg(f"t{i}") for i in range(10)])
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Sent"] * 3 + ["TargetInvalid"] + ["Sent"] * 3 + ["Failed"] + ["Sent"] * 2


async def test_close_releases_the_pool_and_a_later_send_reopens_it(provider, fcm):
    await provider.send([msg()])
    await provider.close()
    assert isinstance((await provider.send([msg()]))[0], Sent)
    assert await provider.send([]) == []


# -- end to end: HTTP API, worker, store ------------------------------------------------------

async def configure(client, fcm: FcmDouble, account: dict[str, Any]) -> None:
    body = {"name": "Acme", "providers": {"fcm": {"credentials": account, "endpoint": fcm.url}},
            "routing": {"push": {"android": "fcm"}}}
    r = await client.put("/v1/apps/acme", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text


async def test_e2e_a_push_is_sent_through_fcm(client, acme, container, fcm, account):
    await configure(client, fcm, account)
    device = await register_device(client, acme, "android", "fcm-token-1")
    _, d = await notify_and_deliver(client, container, acme, data={"invoice": 42, "paid": False},
                                    priority="high", ttl=600)
    (received,) = fcm.received
    assert d["status"] == "sent" and d["provider"] == "fcm" and d["target"] == device["id"]
    assert d["provider_message_id"].startswith("projects/tidings-test/messages/")
    assert received["token"] == "fcm-token-1"
    assert received["notification"] == {"title": "Invoice", "body": "Due"}
    assert received["data"] == {"invoice": "42", "paid": "false"}
    assert received["android"] == {"priority": "high", "ttl": "600s"}
    assert fcm.token_requests == 1


async def test_e2e_an_unregistered_token_disables_the_device(client, acme, container, fcm, account):
    await configure(client, fcm, account)
    device = await register_device(client, acme, "android", "gone-token")
    fcm.fail("gone-token", "unregistered")
    _, d = await notify_and_deliver(client, container, acme)
    assert d["status"] == "failed" and "UNREGISTERED" in d["error"]
    assert (await device_of(client, acme, device["id"]))["enabled"] is False


async def test_e2e_quota_exceeded_waits_for_retry_after(client, acme, container, fcm, account, clock):
    await configure(client, fcm, account)
    await register_device(client, acme, "android", "busy-token")
    fcm.fail("busy-token", "quota", times=1, retry_after="120")
    n, d = await notify_and_deliver(client, container, acme)
    assert (d["status"], d["attempts"]) == ("pending", 1) and "QUOTA_EXCEEDED" in d["error"]
    await assert_due_after(container, clock, 120)
    d = await delivery(client, acme, n["id"])
    assert (d["status"], d["attempts"]) == ("sent", 2)
    assert d["provider_message_id"].startswith("projects/tidings-test/messages/")


async def test_e2e_an_invalid_payload_fails_and_keeps_the_device(client, acme, container, fcm, account):
    await configure(client, fcm, account)
    device = await register_device(client, acme, "android", "fine-token")
    fcm.fail("fine-token", "invalid_argument")
    _, d = await notify_and_deliver(client, container, acme)
    assert d["status"] == "failed" and "INVALID_ARGUMENT" in d["error"]
    assert (await device_of(client, acme, device["id"]))["enabled"] is True
