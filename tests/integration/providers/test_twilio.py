"""The `twilio` provider against a double of Twilio's Messages API: the request Twilio receives,
how each answer maps onto a delivery, the status callback's signature, and the whole path
through the HTTP API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import ADMIN, create_app_with_key, drain
from tests.fakes.smtp_double import SmtpDouble
from tests.fakes.twilio_double import (
    GARBAGE,
    INVALID_TO,
    NOT_MOBILE,
    SERVER_ERROR,
    UNAVAILABLE,
    UNSUBSCRIBED,
    TwilioDouble,
    too_many_requests,
)
from tests.integration.providers.conftest import assert_due_after, delivery, notify, notify_and_deliver
from tidings.adapters.providers.options import ProviderOptions
from tidings.adapters.providers.twilio import TwilioProvider
from tidings.adapters.providers.twilio_signature import twilio_signature, valid_twilio_signature
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent

PHONE = "+393331234567"
OPTIONS = ProviderOptions(timeout=3.0, max_concurrency=8, public_url="https://notify.example.com/")


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioDouble]:
    async with TwilioDouble() as double:
        yield double


def sms(to: str = PHONE, n: int = 0, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": f"dlv-{n}", "notification_id": f"ntf-{n}", "app_id": "acme", "user_id": None,
        "channel": "sms", "provider": "twilio", "target": to, "platform": None,
        "title": "Your code", "body": "1234"}
    values.update(fields)
    return OutboundMessage(**values)


async def send_one(provider: TwilioProvider, message: OutboundMessage) -> Any:
    (result,) = await provider.send([message])
    return result


# --- the signature -------------------------------------------------------------------------------

# Twilio's documented example (the request-validation snippets of its SDKs).
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675310", "Digits": "1234",
              "From": "+14158675310", "To": "+18005551212"}
DOC_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_signature_matches_twilios_documented_example() -> None:
    assert twilio_signature("12345", DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_signature_rejects_any_change() -> None:
    assert not valid_twilio_signature("12346", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL + "&baz=3", DOC_PARAMS, DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL, {**DOC_PARAMS, "Digits": "1235"}, DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL, {**DOC_PARAMS, "Extra": ""}, DOC_SIGNATURE)
    assert not valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, None)
    assert not valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, "")
    assert not valid_twilio_signature("", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_signature_accepts_the_url_with_or_without_its_default_port() -> None:
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert valid_twilio_signature("12345", with_port, DOC_PARAMS, DOC_SIGNATURE)
    signed_with_port = twilio_signature("12345", with_port, DOC_PARAMS)
    assert valid_twilio_signature("12345", DOC_URL, DOC_PARAMS, signed_with_port)
    # Another port is another URL.
    assert not valid_twilio_signature("12345", "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
                                      DOC_PARAMS, DOC_SIGNATURE)


# --- the request Twilio receives -----------------------------------------------------------------


async def test_message_is_created_with_basic_auth_and_form_fields(twilio: TwilioDouble, closing: Any) -> None:
    provider = closing(TwilioProvider(twilio.settings(sender="+15005550006"), OPTIONS))
    result = await send_one(provider, sms(ttl=600))
    assert isinstance(result, Sent) and result.message_id in twilio.messages
    assert result.message_id.startswith("SM") and len(result.message_id) == 34
    message = twilio.message(result.message_id)
    assert message.form == {
        "To": PHONE, "From": "+15005550006", "Body": "Your code\n1234", "ValidityPeriod": "600",
        "StatusCallback": "https://notify.example.com/v1/callbacks/twilio/acme"}
    request = twilio.requests[0]
    assert request["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
    credentials = base64.b64decode(request["headers"]["Authorization"].removeprefix("Basic "))
    assert credentials.decode() == f"{twilio.account_sid}:{twilio.auth_token}"


async def test_messaging_service_sid_replaces_from(twilio: TwilioDouble, closing: Any) -> None:
    service = "MG" + "0123456789abcdef" * 2
    provider = closing(TwilioProvider(twilio.settings(sender=service), replace(OPTIONS, public_url=None)))
    result = await send_one(provider, sms(title=None, body="only a body"))
    assert isinstance(result, Sent)
    assert twilio.message(result.message_id).form == {
        "To": PHONE, "MessagingServiceSid": service, "Body": "only a body"}
    assert twilio.message(result.message_id).resource["status"] == "accepted"


async def test_validity_period_is_clamped_and_the_body_checked(twilio: TwilioDouble, closing: Any) -> None:
    provider = closing(TwilioProvider(twilio.settings(), OPTIONS))
    results = await provider.send([
        sms(n=1, ttl=0), sms(n=2, ttl=86_400), sms(n=3, title="Hi", body=None),
        sms(n=4, title=None, body="x" * 1601), sms(n=5, title=None, body=None),
        sms(n=6, title=None, body="é" * 1600)])
    first, second, third, too_long, empty, longest = results
    forms = [twilio.message(r.message_id).form for r in (first, second, third, longest)
             if isinstance(r, Sent)]
    assert [f.get("ValidityPeriod") for f in forms] == ["1", "14400", None, None]
    assert forms[2]["Body"] == "Hi"
    assert isinstance(too_long, Failed) and "1601" in too_long.reason
    assert isinstance(empty, Failed)
    assert len(twilio.requests) == 4  # nothing was sent for the two that cannot work


async def test_wrong_credentials_are_retried_with_a_reason(twilio: TwilioDouble, closing: Any) -> None:
    provider = closing(TwilioProvider(twilio.settings(auth_token="not-the-token"), OPTIONS))
    result = await send_one(provider, sms())
    assert isinstance(result, Retry)
    assert "20003" in result.reason and "auth_token" in result.reason
    assert not twilio.messages


@pytest.mark.parametrize(("answer", "code"), [(INVALID_TO, 21211), (NOT_MOBILE, 21614),
                                              (UNSUBSCRIBED, 21610)])
async def test_refused_numbers_fail_without_disabling_anything(twilio: TwilioDouble, closing: Any,
                                                               answer: Any, code: int) -> None:
    twilio.script(PHONE, answer)
    provider = closing(TwilioProvider(twilio.settings(), OPTIONS))
    result = await send_one(provider, sms())
    assert isinstance(result, Failed)
    assert str(code) in result.reason and "no device to disable" in result.reason
    assert PHONE not in result.reason  # Twilio's text quotes the number; the reason masks it


async def test_an_invalid_number_is_refused_by_twilios_own_check(twilio: TwilioDouble, closing: Any) -> None:
    provider = closing(TwilioProvider(twilio.settings(), OPTIONS))
    result = await send_one(provider, sms(to="3331234567"))
    assert isinstance(result, Failed) and "21211" in result.reason


async def test_transient_answers_are_retried(twilio: TwilioDouble, closing: Any) -> None:
    numbers = [f"+1415555010{i}" for i in range(5)]
    twilio.script(numbers[0], too_many_requests(retry_after=30))
    twilio.script(numbers[1], too_many_requests())
    twilio.script(numbers[2], SERVER_ERROR)
    twilio.script(numbers[3], UNAVAILABLE)
    twilio.script(numbers[4], GARBAGE)
    provider = closing(TwilioProvider(twilio.settings(), OPTIONS))
    results = await provider.send([sms(to=n, n=i) for i, n in enumerate(numbers)])
    assert all(isinstance(r, Retry) for r in results), results
    limited, limited_no_header, server_error, unavailable, garbage = results
    assert isinstance(limited, Retry) and limited.after == 30 and "20429" in limited.reason
    assert isinstance(limited_no_header, Retry) and limited_no_header.after is None
    assert isinstance(server_error, Retry) and "20500" in server_error.reason
    assert isinstance(unavailable, Retry) and "503" in unavailable.reason
    assert isinstance(garbage, Retry) and "sid" in garbage.reason


async def test_an_unreachable_endpoint_is_retried(twilio: TwilioDouble, closing: Any) -> None:
    settings = twilio.settings()
    await twilio.close()  # nothing listens on that port any more
    provider = closing(TwilioProvider(settings, replace(OPTIONS, timeout=1.0)))
    result = await send_one(provider, sms())
    assert isinstance(result, Retry)


async def test_a_batch_is_sent_concurrently_in_order(twilio: TwilioDouble, closing: Any) -> None:
    numbers = [f"+1415555{i:04d}" for i in range(60)]
    twilio.script(numbers[7], INVALID_TO)
    provider = closing(TwilioProvider(twilio.settings(), OPTIONS))
    results = await provider.send([sms(to=n, n=i) for i, n in enumerate(numbers)])
    for number, result in zip(numbers, results, strict=True):
        if number == numbers[7]:
            assert isinstance(result, Failed)
        else:
            assert isinstance(result, Sent) and twilio.message(result.message_id).form["To"] == number


# --- through the HTTP API ------------------------------------------------------------------------


async def test_sms_and_email_through_the_api(client: Any, container: Any, twilio: TwilioDouble) -> None:
    async with SmtpDouble() as smtp:
        app = await create_app_with_key(
            client, "acme", providers={"smtp": smtp.settings(starttls=False), "twilio": twilio.settings()},
            routing={"email": "smtp", "sms": "twilio"})
        text = await notify(client, app, {"to": {"phone": PHONE}, "title": "Code", "body": "1234"})
        mail = await notify(client, app, {"to": {"email": "ada@example.com"}, "title": "Welcome",
                                        "body": "Hello Ada"})
        assert await drain(container) == 2
        sms_delivery = await delivery(client, app, text["id"])
        mail_delivery = await delivery(client, app, mail["id"])
    assert (sms_delivery["status"], sms_delivery["provider"]) == ("sent", "twilio")
    assert sms_delivery["provider_message_id"] in twilio.messages
    assert twilio.messages[sms_delivery["provider_message_id"]].form["Body"] == "Code\n1234"
    assert (mail_delivery["status"], mail_delivery["provider"]) == ("sent", "smtp")
    (received,) = smtp.to("ada@example.com")
    assert received.message["Message-ID"].strip().strip("<>") == mail_delivery["provider_message_id"]
    assert received.message["X-Tidings-Delivery"] == mail_delivery["id"]


async def test_a_refused_number_fails_the_delivery(client: Any, container: Any,
                                                   twilio: TwilioDouble) -> None:
    app = await create_app_with_key(client, "acme", providers={"twilio": twilio.settings()},
                                    routing={"sms": "twilio"})
    twilio.script(PHONE, UNSUBSCRIBED)
    _, d = await notify_and_deliver(client, container, app, {"to": {"phone": PHONE}, "body": "promo"})
    assert d["status"] == "failed" and "21610" in d["error"] and d["attempts"] == 1


async def test_rate_limit_keeps_the_delivery_pending_until_retry_after(
        client: Any, container: Any, clock: Any, twilio: TwilioDouble) -> None:
    app = await create_app_with_key(client, "acme", providers={"twilio": twilio.settings()},
                                    routing={"sms": "twilio"})
    twilio.script(PHONE, too_many_requests(retry_after=120), times=1)
    n, d = await notify_and_deliver(client, container, app, {"to": {"phone": PHONE}, "body": "code 1234"})
    assert (d["status"], d["attempts"]) == ("pending", 1) and "20429" in d["error"]
    await assert_due_after(container, clock, 120)
    d = await delivery(client, app, n["id"])
    assert (d["status"], d["attempts"]) == ("sent", 2)
    assert d["provider_message_id"] in twilio.messages


@pytest.mark.parametrize(("status", "error_code", "expected"), [
    ("delivered", None, "delivered"), ("undelivered", 30003, "failed")])
async def test_status_callback_updates_the_delivery(client: Any, container: Any, twilio: TwilioDouble,
                                                    status: str, error_code: int | None,
                                                    expected: str) -> None:
    twilio.deliver = client  # Twilio's callback reaches the in-process app
    app = await create_app_with_key(client, "acme", providers={"twilio": twilio.settings()},
                                    routing={"sms": "twilio"})
    n, sent = await notify_and_deliver(client, container, app, {"to": {"phone": PHONE}, "body": "code 1234"})
    sid = sent["provider_message_id"]
    assert twilio.messages[sid].form["StatusCallback"] == "http://tidings.test/v1/callbacks/twilio/acme"
    r = await twilio.send_status_callback(sid, status, error_code=error_code)
    assert r.status_code == 204, r.text
    d = await delivery(client, app, n["id"])
    assert d["status"] == expected
    if error_code is not None:
        assert str(error_code) in d["error"]
    # A callback that is not signed with the account's token changes nothing.
    forged = {"MessageSid": sid, "MessageStatus": "failed", "AccountSid": twilio.account_sid}
    r = await client.post("/v1/callbacks/twilio/acme", data=forged,
                          headers={"X-Twilio-Signature": twilio_signature("guess", str(r.request.url), forged)})
    assert r.status_code in (401, 403), r.text
    assert (await delivery(client, app, n["id"]))["status"] == expected


async def test_app_settings_reject_a_bad_account_sid(client: Any) -> None:
    r = await client.put("/v1/apps/acme", json={"name": "Acme", "providers": {"twilio": {
        "account_sid": "AC123", "auth_token": "x", "from": "+15005550006"}}}, headers=ADMIN)
    assert r.status_code == 422, r.text
