"""The SNS provider against moto in server mode (signatures checked against an IAM user): the
adapter alone (endpoint workflow, payloads, error mapping, SMS, concurrency), then end to end
through the HTTP API and the delivery worker, with SES for the e-mail channel."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import ADMIN, drain
from tests.fakes.moto_server import MotoServer, query_map, ses_backend, sns_backend
from tests.fakes.tls import loopback_tls
from tidings.adapters.providers.options import ProviderOptions
from tidings.adapters.providers.sns import SnsProvider, platform_kind
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent, TargetInvalid

OPTIONS = ProviderOptions(timeout=3.0, max_concurrency=8)
REGION = "us-east-1"


@dataclass
class Aws:
    server: MotoServer
    key_id: str
    secret: str
    android: str  # platform application ARNs
    ios: str

    def client(self, service: str) -> Any:
        return self.server.client(service, self.key_id, self.secret)

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"region": REGION, "endpoint_url": self.server.url, "access_key_id": self.key_id,
                "secret_access_key": self.secret,
                "platform_applications": {"android": self.android, "ios": self.ios}, **extra}

    def endpoint(self, token: str, user: str = "u1", **attributes: str) -> str:
        sns = self.client("sns")
        arn = str(sns.create_platform_endpoint(PlatformApplicationArn=self.android, Token=token,
                                               CustomUserData=user)["EndpointArn"])
        if attributes:
            sns.set_endpoint_attributes(EndpointArn=arn, Attributes=attributes)
        return arn


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:
    moto_server.reset()
    with moto_server.signed_by() as (key_id, secret):
        sns = moto_server.client("sns", key_id, secret)
        android = sns.create_platform_application(
            Name="droid", Platform="GCM", Attributes={"PlatformCredential": "fcm-key"})
        ios = sns.create_platform_application(
            Name="phone", Platform="APNS", Attributes={"PlatformCredential": "p8"})
        yield Aws(moto_server, key_id, secret, android["PlatformApplicationArn"],
                  ios["PlatformApplicationArn"])


@pytest.fixture
def make(aws: Aws, closing: Any) -> Any:
    def build(options: ProviderOptions = OPTIONS, **extra: Any) -> SnsProvider:
        return closing(SnsProvider(aws.config(**extra), options))

    return build


@pytest.fixture
def provider(make: Any) -> SnsProvider:
    return make()


def push(token: str = "tok-1", **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": "d1", "notification_id": "n1", "app_id": "acme", "user_id": "u1",
        "channel": "push", "provider": "sns", "target": token, "platform": "android",
        "title": "Invoice", "body": "Due today"}
    values.update(fields)
    return OutboundMessage(**values)


def sms(phone: str = "+15555550100", **fields: Any) -> OutboundMessage:
    return push(phone, channel="sms", platform=None, **fields)


def published(arn: str) -> list[dict[str, Any]]:
    """What moto's endpoint was sent, each Publish `Message` decoded."""
    return [json.loads(m) for m in sns_backend(REGION).platform_endpoints[arn].messages.values()]


def attributes_of(arn: str) -> dict[str, Any]:
    return dict(sns_backend(REGION).platform_endpoints[arn].attributes)


# -- the endpoint workflow ---------------------------------------------------------------------

async def test_first_push_creates_the_endpoint_and_hands_back_its_arn(provider, aws):
    (result,) = await provider.send([push()])
    assert isinstance(result, Sent) and result.message_id and result.target_ref
    arn = result.target_ref
    assert arn.startswith("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/droid/")
    (create,) = aws.server.calls_of("CreatePlatformEndpoint")
    assert create.params["PlatformApplicationArn"] == aws.android
    assert create.params["Token"] == "tok-1" and create.params["CustomUserData"] == "u1"
    assert create.access_key == aws.key_id
    (publish,) = aws.server.calls_of("Publish")
    assert publish.params["TargetArn"] == arn and publish.params["MessageStructure"] == "json"
    assert aws.server.calls_of("SetEndpointAttributes") == []  # new and enabled already
    assert list(sns_backend(REGION).platform_endpoints[arn].messages) == [result.message_id]


async def test_a_known_token_gets_its_existing_endpoint_back(provider, aws):
    arn = aws.endpoint("tok-1")
    (result,) = await provider.send([push()])
    assert isinstance(result, Sent) and result.target_ref == arn
    assert list(sns_backend(REGION).platform_endpoints) == [arn]


async def test_a_stored_arn_is_published_to_directly(provider, aws):
    arn = aws.endpoint("tok-1")
    aws.server.calls.clear()
    (result,) = await provider.send([push(target_ref=arn)])
    assert isinstance(result, Sent) and result.target_ref == arn
    assert [c.action for c in aws.server.calls] == ["Publish"]
    assert len(published(arn)) == 1


async def test_a_disabled_endpoint_is_re_enabled_with_the_token_before_publishing(provider, aws):
    # SNS disabled it (the platform refused an older token) and holds that older token.
    arn = aws.endpoint("tok-1", Enabled="false", Token="tok-0")
    aws.server.calls.clear()
    (result,) = await provider.send([push()])
    assert isinstance(result, Sent) and result.target_ref == arn
    (update,) = aws.server.calls_of("SetEndpointAttributes")
    assert query_map(update.params, "Attributes") == {
        "Token": "tok-1", "Enabled": "true", "CustomUserData": "u1"}
    attributes = attributes_of(arn)
    assert attributes["Enabled"] is True and attributes["Token"] == "tok-1"
    actions = [c.action for c in aws.server.calls]
    assert actions.index("SetEndpointAttributes") < actions.index("Publish")
    assert len(published(arn)) == 1


async def test_an_enabled_endpoint_holding_an_old_token_gets_the_new_one(provider, aws):
    arn = aws.endpoint("tok-1", Token="tok-0")
    (result,) = await provider.send([push()])
    assert isinstance(result, Sent) and result.target_ref == arn
    assert attributes_of(arn)["Token"] == "tok-1"


async def test_a_token_that_moved_to_another_user_keeps_its_endpoint(provider, aws):
    arn = aws.endpoint("tok-1", user="u0")
    (result,) = await provider.send([push(user_id="u1")])
    assert isinstance(result, Sent) and result.target_ref == arn
    assert attributes_of(arn)["CustomUserData"] == "u1"


async def test_a_disabled_endpoint_behind_a_stored_arn_is_a_target_invalid(provider, aws):
    arn = aws.endpoint("tok-1", Enabled="false")
    aws.server.calls.clear()
    (result,) = await provider.send([push(target_ref=arn)])
    assert result == TargetInvalid("EndpointDisabled: Endpoint is disabled")
    assert [c.action for c in aws.server.calls] == ["Publish"]
    assert published(arn) == []


@pytest.mark.parametrize("deleted_as", ["moto", "aws"])
async def test_a_deleted_endpoint_is_created_again_and_published_to_once(provider, aws, deleted_as):
    old = aws.endpoint("tok-1")
    aws.client("sns").delete_endpoint(EndpointArn=old)
    if deleted_as == "aws":  # what SNS itself answers for an ARN that names nothing
        aws.server.fail("Publish", "InvalidParameter", "Invalid parameter: TargetArn Reason: "
                        "No endpoint found for the target arn specified")
    aws.server.calls.clear()
    (result,) = await provider.send([push(target_ref=old)])
    assert isinstance(result, Sent) and result.target_ref and result.target_ref != old
    assert [c.action for c in aws.server.calls] == [
        "Publish", "CreatePlatformEndpoint", "GetEndpointAttributes", "Publish"]
    assert len(published(result.target_ref)) == 1


async def test_an_endpoint_that_cannot_be_recreated_is_not_retried_in_a_loop(provider, aws):
    old = aws.endpoint("tok-1")
    aws.client("sns").delete_endpoint(EndpointArn=old)
    aws.server.fail("Publish", "NotFound", "Endpoint does not exist", status=404, times=None)
    (result,) = await provider.send([push(target_ref=old)])
    assert isinstance(result, Retry) and "NotFound" in result.reason
    assert len(aws.server.calls_of("Publish")) == 2


async def test_a_token_sns_refuses_is_a_target_invalid(provider, aws):
    aws.server.fail("CreatePlatformEndpoint", "InvalidParameter",
                    "Invalid parameter: Token Reason: iOS device tokens must be no more than "
                    "400 hexadecimal characters")
    (result,) = await provider.send([push()])
    assert isinstance(result, TargetInvalid) and "Token" in result.reason
    assert aws.server.calls_of("Publish") == []


async def test_a_platform_without_an_application_fails_without_calling_aws(provider, aws):
    aws.server.calls.clear()
    (result,) = await provider.send([push(platform="web")])
    assert result == Failed("no SNS platform application for web")
    assert aws.server.calls == []


async def test_a_platform_application_that_is_gone_fails(make, aws):
    provider = make(platform_applications={
        "android": "arn:aws:sns:us-east-1:123456789012:app/GCM/nothing"})
    (result,) = await provider.send([push()])
    assert isinstance(result, Failed) and "platform application not found" in result.reason


# -- payloads -----------------------------------------------------------------------------------

async def test_android_gets_an_fcm_v1_message(provider, aws):
    message = push(data={"invoice": 42, "paid": False, "ref": "A-1"}, priority="high", ttl=600,
                   collapse_key="invoices",
                   overrides={"android": {"notification": {"channel_id": "billing"}}})
    (result,) = await provider.send([message])
    assert isinstance(result, Sent)
    (doc,) = published(result.target_ref)
    assert doc["default"] == "Due today"
    fcm = json.loads(doc["GCM"])["fcmV1Message"]["message"]
    assert fcm == {
        "notification": {"title": "Invoice", "body": "Due today"},
        "data": {"invoice": "42", "paid": "false", "ref": "A-1"},
        "android": {"priority": "high", "collapse_key": "invoices",
                    "notification": {"channel_id": "billing"}}}
    (publish,) = aws.server.calls_of("Publish")
    assert query_map(publish.params, "MessageAttributes") == {
        "AWS.SNS.MOBILE.FCM.TTL": {"DataType": "String", "StringValue": "600"}}


async def test_a_push_without_ttl_sends_no_attributes(provider, aws):
    await provider.send([push()])
    (publish,) = aws.server.calls_of("Publish")
    assert query_map(publish.params, "MessageAttributes") == {}
    assert json.loads(json.loads(publish.params["Message"])["GCM"])["fcmV1Message"]["message"][
        "android"] == {"priority": "normal"}


async def test_ios_gets_an_apns_payload_and_its_headers_as_attributes(provider, aws):
    message = push("ab" * 32, platform="ios", data={"invoice": 42}, priority="high", ttl=60,
                   collapse_key="inv", overrides={"apns": {"payload": {"aps": {"sound": "bell.caf"}},
                                                           "headers": {"apns-priority": "5"}}})
    (result,) = await provider.send([message])
    assert isinstance(result, Sent) and ":endpoint/APNS/phone/" in result.target_ref
    (doc,) = published(result.target_ref)
    assert set(doc) == {"default", "APNS"}
    assert json.loads(doc["APNS"]) == {
        "invoice": 42, "aps": {"alert": {"title": "Invoice", "body": "Due today"}, "sound": "bell.caf"}}
    (publish,) = aws.server.calls_of("Publish")
    assert {k: v["StringValue"] for k, v in query_map(publish.params, "MessageAttributes").items()} == {
        "AWS.SNS.MOBILE.APNS.PUSH_TYPE": "alert", "AWS.SNS.MOBILE.APNS.PRIORITY": "5",
        "AWS.SNS.MOBILE.APNS.COLLAPSE_ID": "inv", "AWS.SNS.MOBILE.APNS.TTL": "60"}


async def test_a_silent_ios_push_is_a_background_one(provider, aws):
    (result,) = await provider.send([push("cd" * 32, platform="ios", title=None, body=None,
                                          data={"sync": "1"})])
    assert isinstance(result, Sent)
    (doc,) = published(result.target_ref)
    assert json.loads(doc["APNS"]) == {"sync": "1", "aps": {"content-available": 1}}
    (publish,) = aws.server.calls_of("Publish")
    attributes = query_map(publish.params, "MessageAttributes")
    assert attributes["AWS.SNS.MOBILE.APNS.PUSH_TYPE"]["StringValue"] == "background"
    assert attributes["AWS.SNS.MOBILE.APNS.PRIORITY"]["StringValue"] == "5"


def test_the_platform_is_read_from_the_application_arn():
    assert platform_kind("arn:aws:sns:eu-west-1:1:app/GCM/droid") == "GCM"
    assert platform_kind("arn:aws:sns:eu-west-1:1:app/APNS_SANDBOX/dev") == "APNS_SANDBOX"
    assert platform_kind("arn:aws:sns:eu-west-1:1:endpoint/x") == ""


async def test_the_sandbox_uses_its_own_key_and_ttl_attribute(make, aws):
    sandbox = aws.client("sns").create_platform_application(
        Name="dev", Platform="APNS_SANDBOX", Attributes={})["PlatformApplicationArn"]
    provider = make(platform_applications={"ios": sandbox})
    (result,) = await provider.send([push("ef" * 32, platform="ios", ttl=30)])
    assert isinstance(result, Sent)
    (doc,) = published(result.target_ref)
    assert set(doc) == {"default", "APNS_SANDBOX"}
    (publish,) = aws.server.calls_of("Publish")
    assert "AWS.SNS.MOBILE.APNS_SANDBOX.TTL" in query_map(publish.params, "MessageAttributes")


# -- SMS ------------------------------------------------------------------------------------

async def test_an_sms_is_published_to_the_phone_number_as_transactional(provider, aws):
    (result,) = await provider.send([sms()])
    assert isinstance(result, Sent) and result.message_id and result.target_ref is None
    assert sns_backend(REGION).sms_messages[result.message_id] == ("+15555550100", "Invoice\nDue today")
    (publish,) = aws.server.calls_of("Publish")
    assert publish.params["PhoneNumber"] == "+15555550100" and "TargetArn" not in publish.params
    assert query_map(publish.params, "MessageAttributes") == {
        "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}


async def test_an_sms_without_title_is_the_body_alone(provider, aws):
    (result,) = await provider.send([sms(title=None)])
    assert sns_backend(REGION).sms_messages[result.message_id][1] == "Due today"


async def test_a_phone_number_sns_refuses_fails(provider, aws):
    (result,) = await provider.send([sms("555-0100")])
    assert isinstance(result, Failed) and "E164" in result.reason


async def test_an_opted_out_phone_fails(provider, aws):
    aws.server.fail("Publish", "OptedOut", "Phone number is opted out")
    (result,) = await provider.send([sms()])
    assert isinstance(result, Failed) and result.reason.startswith("OptedOut")


async def test_sns_does_not_send_email(provider, aws):
    (result,) = await provider.send([push("a@example.org", channel="email", platform=None)])
    assert result == Failed("sns does not send email")


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "status", "headers", "expected", "after"), [
    ("Throttled", 429, {"Retry-After": "7"}, Retry, 7.0),
    ("Throttling", 400, {}, Retry, None),
    ("KMSThrottling", 400, {}, Retry, None),
    ("InternalError", 500, {}, Retry, None),
    ("ServiceUnavailable", 503, {}, Retry, None),
    ("AuthorizationError", 403, {}, Retry, None),
    ("PlatformApplicationDisabled", 400, {}, Retry, None),
    ("InvalidParameter", 400, {}, Failed, None),
    ("ValidationException", 400, {}, Failed, None),
    ("EndpointDisabled", 400, {}, TargetInvalid, None),
])
async def test_each_publish_error_is_mapped(provider, aws, code, status, headers, expected, after):
    arn = aws.endpoint("tok-1")
    aws.server.fail("Publish", code, f"{code} said SNS", status=status, headers=headers)
    (result,) = await provider.send([push(target_ref=arn)])
    assert type(result) is expected and code in result.reason
    if isinstance(result, Retry):
        assert result.after == after
    if code == "AuthorizationError":
        assert "credentials" in result.reason
    # The error cleared, the same message goes through.
    (again,) = await provider.send([push(target_ref=arn)])
    assert isinstance(again, Sent)


async def test_a_wrong_secret_is_a_retry_that_names_the_credentials(make, aws):
    provider = make(secret_access_key="not-the-secret")
    (result,) = await provider.send([sms()])
    assert isinstance(result, Retry)
    assert result.reason.startswith("AWS credentials refused: SignatureDoesNotMatch")
    assert sns_backend(REGION).sms_messages == {}


async def test_an_unknown_key_is_a_retry_that_names_the_credentials(make, aws):
    provider = make(access_key_id="AKIAUNKNOWNKEY000000")
    (result,) = await provider.send([sms()])
    assert isinstance(result, Retry) and "InvalidClientTokenId" in result.reason


async def test_a_key_without_permission_to_publish_is_a_retry(moto_server):
    moto_server.reset()
    with moto_server.signed_by(("ses:*",)) as (key_id, secret):
        provider = SnsProvider({"region": REGION, "endpoint_url": moto_server.url,
                                "access_key_id": key_id, "secret_access_key": secret}, OPTIONS)
        try:
            (result,) = await provider.send([sms()])
        finally:
            await provider.close()
    assert isinstance(result, Retry) and "AWS credentials refused: AccessDenied" in result.reason


async def test_an_unreachable_endpoint_is_a_retry(aws):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    provider = SnsProvider(aws.config(endpoint_url=closed), ProviderOptions(timeout=1.0))
    try:
        results = await provider.send([sms(), push()])
    finally:
        await provider.close()
    assert all(isinstance(r, Retry) for r in results), results


# -- the client ---------------------------------------------------------------------------------

async def test_tls_trusts_the_options_context_and_nothing_else(aws):
    tls = loopback_tls()
    server = MotoServer(tls=tls.server_context(alpn=()))
    server.start()
    trusting = SnsProvider(aws.config(endpoint_url=server.url),
                           ProviderOptions(timeout=3.0, ssl_context=tls.client_context()))
    default = SnsProvider(aws.config(endpoint_url=server.url), ProviderOptions(timeout=3.0))
    try:
        (sent,) = await trusting.send([sms()])
        (refused,) = await default.send([sms()])
    finally:
        await trusting.close()
        await default.close()
        server.stop()
    assert isinstance(sent, Sent) and sent.message_id in sns_backend(REGION).sms_messages
    assert isinstance(refused, Retry) and "certificate" in refused.reason.lower()


async def test_a_batch_shares_one_client_and_keeps_its_order(make, aws, monkeypatch):
    from aiobotocore.session import AioSession

    created: list[str] = []
    original = AioSession.create_client

    def counting(self: Any, service: str, *args: Any, **kwargs: Any) -> Any:
        created.append(service)
        return original(self, service, *args, **kwargs)

    monkeypatch.setattr(AioSession, "create_client", counting)
    provider = make(ProviderOptions(timeout=3.0, max_concurrency=4))
    phones = [f"+1555555{i:04d}" for i in range(12)]
    results = await provider.send([sms(p, delivery_id=f"d{i}") for i, p in enumerate(phones)])
    assert created == ["sns"]
    texts = sns_backend(REGION).sms_messages
    assert [texts[r.message_id][0] for r in results] == phones


async def test_close_releases_the_client_and_a_later_send_reopens_it(provider, aws):
    assert isinstance((await provider.send([sms()]))[0], Sent)
    await provider.close()
    await provider.close()  # twice is fine
    assert isinstance((await provider.send([sms()]))[0], Sent)
    assert len(sns_backend(REGION).sms_messages) == 2


# -- end to end: HTTP API, worker, store --------------------------------------------------------

SENDER = "notify@example.com"


async def configure(client, aws: Aws) -> None:
    aws.client("sesv2").create_email_identity(EmailIdentity=SENDER)
    credentials = {"endpoint_url": aws.server.url, "access_key_id": aws.key_id,
                   "secret_access_key": aws.secret}
    body = {"name": "Acme",
            "providers": {
                "sns": {"region": REGION, "platform_applications": {"android": aws.android},
                        **credentials},
                "ses": {"region": REGION, "from": SENDER, **credentials}},
            "routing": {"push": {"android": "sns"}, "sms": "sns", "email": "ses"}}
    r = await client.put("/v1/apps/acme", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text


async def pair(client, app, token: str = "tok-1", user: str = "u1") -> dict[str, Any]:
    r = await client.post(f"/v1/users/{user}/devices", json={"platform": "android", "token": token},
                          headers=app["headers"])
    assert r.status_code in (200, 201), r.text
    return r.json()


async def notify(client, app, channels: list[str], **body: Any) -> dict[str, Any]:
    payload = {"to": {"user_id": "u1"}, "channels": channels, "title": "Invoice", "body": "Due"}
    payload.update(body)
    r = await client.post("/v1/notifications", json=payload, headers=app["headers"])
    assert r.status_code == 202, r.text
    (item,) = r.json()["items"]
    return item


async def deliveries(client, app, notification_id: str) -> dict[str, dict[str, Any]]:
    r = await client.get(f"/v1/notifications/{notification_id}", headers=app["headers"])
    assert r.status_code == 200, r.text
    return {d["channel"]: d for d in r.json()["deliveries"]}


async def device_of(client, app, device_id: str, user: str = "u1") -> dict[str, Any]:
    r = await client.get(f"/v1/users/{user}/devices", headers=app["headers"])
    assert r.status_code == 200, r.text
    return next(d for d in r.json()["items"] if d["id"] == device_id)


async def test_e2e_push_sms_and_email_go_through_sns_and_ses(client, acme, container, aws):
    await configure(client, aws)
    device = await pair(client, acme)
    r = await client.put("/v1/users/u1", json={"email": "ada@example.org", "phone": "+15555550123"},
                         headers=acme["headers"])
    assert r.status_code in (200, 201), r.text
    n = await notify(client, acme, ["push", "sms", "email"], data={"invoice": 42}, ttl=300)
    assert await drain(container) == 3
    by_channel = await deliveries(client, acme, n["id"])
    assert {c: (d["status"], d["provider"]) for c, d in by_channel.items()} == {
        "push": ("sent", "sns"), "sms": ("sent", "sns"), "email": ("sent", "ses")}
    assert all(d["provider_message_id"] for d in by_channel.values())
    assert by_channel["push"]["target"] == device["id"]

    (endpoint,) = sns_backend(REGION).platform_endpoints.values()
    assert endpoint.token == "tok-1" and endpoint.custom_user_data == "u1"
    assert list(endpoint.messages) == [by_channel["push"]["provider_message_id"]]
    fcm = json.loads(json.loads(endpoint.messages[by_channel["push"]["provider_message_id"]])["GCM"])
    assert fcm["fcmV1Message"]["message"]["data"] == {"invoice": "42"}
    assert sns_backend(REGION).sms_messages[by_channel["sms"]["provider_message_id"]] == (
        "+15555550123", "Invoice\nDue")
    (mail,) = ses_backend(REGION).sent_messages
    assert (mail.id, mail.source, mail.subject, mail.destinations) == (
        by_channel["email"]["provider_message_id"], SENDER, "Invoice",
        {"ToAddresses": ["ada@example.org"]})
    (send,) = aws.server.calls_of("SendEmail")
    assert {t["Name"]: t["Value"] for t in send.params["EmailTags"]} == {
        "tidings_app": "acme", "tidings_notification": n["id"],
        "tidings_delivery": by_channel["email"]["id"]}


async def test_e2e_the_endpoint_arn_is_kept_and_follows_the_device(client, acme, container, aws):
    """The whole token-management workflow: created once, reused, disabled by SNS (the device is
    disabled), re-registered by the app (the endpoint is re-enabled)."""
    await configure(client, aws)
    device = await pair(client, acme)
    first = await notify(client, acme, ["push"])
    assert await drain(container) == 1
    assert (await deliveries(client, acme, first["id"]))["push"]["status"] == "sent"
    (arn,) = sns_backend(REGION).platform_endpoints

    second = await notify(client, acme, ["push"])
    assert await drain(container) == 1
    assert (await deliveries(client, acme, second["id"]))["push"]["status"] == "sent"
    # The stored ARN was used: no second CreatePlatformEndpoint (needs the device's provider
    # reference kept by the store and handed back as OutboundMessage.target_ref).
    assert len(aws.server.calls_of("CreatePlatformEndpoint")) == 1
    assert len(published(arn)) == 2

    # The platform told SNS the token is gone: SNS disabled the endpoint.
    aws.client("sns").set_endpoint_attributes(EndpointArn=arn, Attributes={"Enabled": "false"})
    third = await notify(client, acme, ["push"])
    assert await drain(container) == 1
    d = (await deliveries(client, acme, third["id"]))["push"]
    assert d["status"] == "failed" and "EndpointDisabled" in d["error"]
    assert (await device_of(client, acme, device["id"]))["enabled"] is False

    # The app registers the same token again: the device is enabled, and so is its endpoint.
    await pair(client, acme)
    assert (await device_of(client, acme, device["id"]))["enabled"] is True
    fourth = await notify(client, acme, ["push"])
    assert await drain(container) == 1
    assert (await deliveries(client, acme, fourth["id"]))["push"]["status"] == "sent"
    assert attributes_of(arn)["Enabled"] is True
    assert list(sns_backend(REGION).platform_endpoints) == [arn]
    assert len(published(arn)) == 3


async def test_e2e_a_throttled_sms_waits_for_retry_after(client, acme, container, aws, clock):
    await configure(client, aws)
    r = await client.put("/v1/users/u1", json={"phone": "+15555550123"}, headers=acme["headers"])
    assert r.status_code in (200, 201), r.text
    aws.server.fail("Publish", "Throttled", "Rate exceeded", status=429, headers={"Retry-After": "40"})
    n = await notify(client, acme, ["sms"])
    assert await drain(container) == 1
    d = (await deliveries(client, acme, n["id"]))["sms"]
    assert (d["status"], d["attempts"]) == ("pending", 1) and "Throttled" in d["error"]
    clock.advance(39)
    assert await container.dispatcher.run_once() == 0
    clock.advance(1)
    assert await container.dispatcher.run_once() == 1
    d = (await deliveries(client, acme, n["id"]))["sms"]
    assert (d["status"], d["attempts"]) == ("sent", 2) and d["provider_message_id"]
