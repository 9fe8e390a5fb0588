"""SNS HTTP(S) notifications: signature verification, subscription confirmation, and the
receipts read from SES events and SMS delivery status records."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes.sns_signer import (
    CERT_URL,
    TOPIC_ARN,
    SnsSigner,
    ses_bounce,
    ses_complaint,
    ses_delivery,
    ses_delivery_delay,
    ses_open,
    ses_reject,
    ses_rendering_failure,
    ses_send,
    sms_status,
)
from tidings.adapters.receipts.sns import (
    SnsCertificateUnavailable,
    SnsMessageError,
    SnsSignatureError,
    SnsVerifier,
    confirm_subscription,
    parse_body,
    receipts_from,
)
from tidings.domain.notifications import DeliveryStatus

UTC = dt.UTC
SES_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"


@pytest.fixture
def signer() -> SnsSigner:
    return SnsSigner()


@pytest.fixture
async def verifier(signer: SnsSigner):
    v = SnsVerifier(signer.fetcher)
    yield v
    await v.close()


# --- signatures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
async def test_notification_signed_by_sns_verifies(signer, verifier, version):
    doc = signer.notification(ses_delivery(SES_ID), version=version)
    await verifier.verify(doc)
    assert signer.fetched == [CERT_URL]


@pytest.mark.parametrize("version", ["1", "2"])
async def test_notification_with_subject_and_multiline_unicode_message_verifies(signer, verifier, version):
    doc = signer.notification("Hello\nwörld — ✓\n", subject="Ünïcode subject", version=version)
    await verifier.verify(doc)
    doc["Subject"] = "another subject"
    with pytest.raises(SnsSignatureError):
        await verifier.verify(doc)


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
@pytest.mark.parametrize("version", ["1", "2"])
async def test_subscription_messages_verify(signer, verifier, kind, version):
    doc = signer.subscription_confirmation(version=version, kind=kind)
    await verifier.verify(doc)
    doc["Token"] = doc["Token"][::-1]
    with pytest.raises(SnsSignatureError, match="does not verify"):
        await verifier.verify(doc)


async def test_certificate_is_fetched_once_per_url(signer, verifier):
    for _ in range(3):
        await verifier.verify(signer.notification({"eventType": "Send"}))
    assert signer.fetched == [CERT_URL]


async def test_certificate_cache_is_bounded():
    pem = SnsSigner().cert_pem
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return pem

    verifier = SnsVerifier(fetch)
    urls = [f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{i}.pem" for i in range(33)]
    for url in urls:
        await verifier.verify(SnsSigner(cert_url=url).notification("x"))
    assert fetched == urls
    await verifier.verify(SnsSigner(cert_url=urls[-1]).notification("x"))  # still cached
    await verifier.verify(SnsSigner(cert_url=urls[0]).notification("x"))  # evicted
    assert fetched == [*urls, urls[0]]


@pytest.mark.parametrize("field,value", [
    ("Message", json.dumps(ses_bounce(SES_ID))),
    ("MessageId", "00000000-0000-0000-0000-000000000000"),
    ("TopicArn", "arn:aws:sns:us-east-1:999999999999:other"),
    ("Type", "SubscriptionConfirmation"),
])
async def test_tampered_notification_is_refused(signer, verifier, field, value):
    doc = signer.notification(ses_delivery(SES_ID))
    doc[field] = value
    if field == "Type":
        doc.update(Token="t", SubscribeURL="https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription")
    with pytest.raises(SnsSignatureError, match="does not verify"):
        await verifier.verify(doc)


async def test_tampered_timestamp_is_refused(signer, verifier):
    now = dt.datetime.now(UTC)
    doc = signer.notification("x", at=now - dt.timedelta(minutes=10))
    doc["Timestamp"] = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with pytest.raises(SnsSignatureError, match="does not verify"):
        await verifier.verify(doc)


async def test_signature_version_is_what_is_checked(signer, verifier):
    doc = signer.notification("x", version="1")
    doc["SignatureVersion"] = "2"  # a SHA1 signature presented as SHA256
    with pytest.raises(SnsSignatureError, match="does not verify"):
        await verifier.verify(doc)


async def test_signature_from_another_key_is_refused(signer):
    impostor = SnsSigner(label="impostor")  # same certificate URL, another key
    verifier = SnsVerifier(signer.fetcher)
    with pytest.raises(SnsSignatureError, match="does not verify"):
        await verifier.verify(impostor.notification(ses_delivery(SES_ID)))
    assert signer.fetched == [CERT_URL]


@pytest.mark.parametrize("url", [
    "https://evil.example.com/x.pem",
    "http://sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example.com/x.pem",
    "https://evil.example.com/sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example.com/x.pem",
    "https://evil.example.com\\@sns.us-east-1.amazonaws.com/x.pem",
    "https://user@sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/x.pem",
    "https://s3.us-east-1.amazonaws.com/x.pem",
    "https://sns.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com/x.txt",
    "https://sns.us-east-1.amazonaws.com/x.pem?redirect=https://evil.example.com/",
    "https://sns.us-east-1.amazonaws.com/x.pem#frag",
    "ftp://sns.us-east-1.amazonaws.com/x.pem",
    "https://127.0.0.1/x.pem",
])
async def test_certificate_url_off_sns_is_refused_before_fetching(url):
    forger = SnsSigner(label="forger", cert_url=url)
    verifier = SnsVerifier(forger.fetcher)
    with pytest.raises(SnsSignatureError, match="SigningCertURL"):
        await verifier.verify(forger.notification(ses_delivery(SES_ID)))
    assert forger.fetched == []


async def test_china_regions_certificate_url_is_allowed():
    signer = SnsSigner(region="cn-north-1",
                       cert_url="https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem")
    await SnsVerifier(signer.fetcher).verify(signer.notification("x"))
    assert signer.fetched == [signer.cert_url]


async def test_old_message_is_refused_as_a_replay(signer, verifier):
    sent = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    doc = signer.notification(ses_delivery(SES_ID), at=sent)
    with pytest.raises(SnsSignatureError, match="too old"):
        await verifier.verify(doc)
    with pytest.raises(SnsSignatureError, match="too old"):
        await verifier.verify(doc, now=sent + dt.timedelta(hours=1, seconds=1))
    assert signer.fetched == []
    await verifier.verify(doc, now=sent + dt.timedelta(minutes=59))
    assert signer.fetched == [CERT_URL]


async def test_message_dated_in_the_future_is_refused(signer, verifier):
    sent = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    doc = signer.notification("x", at=sent)
    with pytest.raises(SnsSignatureError, match="future"):
        await verifier.verify(doc, now=sent - dt.timedelta(hours=1))
    await verifier.verify(doc, now=sent - dt.timedelta(minutes=1))  # a little clock skew


async def test_unsupported_signature_version_is_refused(signer, verifier):
    doc = signer.notification("x")
    doc["SignatureVersion"] = "3"
    with pytest.raises(SnsSignatureError, match="SignatureVersion"):
        await verifier.verify(doc)
    assert signer.fetched == []


@pytest.mark.parametrize("change,match", [
    ({"Type": "Bogus"}, "Type"),
    ({"Type": None}, "Type"),
    ({"Signature": None}, "Signature"),
    ({"Message": 42}, "Message"),
    ({"MessageId": ""}, "MessageId"),
    ({"SigningCertURL": None}, "SigningCertURL"),
    ({"Subject": 5}, "Subject"),
    ({"Timestamp": "yesterday"}, "Timestamp"),
    ({"Signature": "not base64!"}, "base64"),
])
async def test_malformed_message_is_refused(signer, verifier, change, match):
    doc = signer.notification("x")
    for k, v in change.items():
        if v is None:
            del doc[k]
        else:
            doc[k] = v
    with pytest.raises(SnsMessageError, match=match):
        await verifier.verify(doc)
    assert signer.fetched == []


async def test_subscription_confirmation_needs_its_token(signer, verifier):
    doc = signer.subscription_confirmation()
    del doc["Token"]
    with pytest.raises(SnsMessageError, match="Token"):
        await verifier.verify(doc)


async def test_not_an_object_is_refused(verifier):
    with pytest.raises(SnsMessageError):
        await verifier.verify(["Type", "Notification"])  # type: ignore[arg-type]


async def test_unreachable_certificate_is_reported(signer):
    async def broken(url: str) -> bytes:
        raise ConnectionResetError("reset")

    with pytest.raises(SnsCertificateUnavailable, match="ConnectionResetError"):
        await SnsVerifier(broken).verify(signer.notification("x"))


async def test_certificate_that_is_not_pem_is_refused(signer):
    async def html(url: str) -> bytes:
        return b"<html>Access denied</html>"

    with pytest.raises(SnsCertificateUnavailable, match="PEM"):
        await SnsVerifier(html).verify(signer.notification("x"))


async def test_certificate_without_an_rsa_key_is_refused(signer):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns")])
    now = dt.datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))

    async def ec_cert(url: str) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    with pytest.raises(SnsSignatureError, match="RSA"):
        await SnsVerifier(ec_cert).verify(signer.notification("x"))


# --- the default certificate fetcher (on loopback: the URL checks are bypassed on purpose) ------

@pytest.fixture
async def cert_server(signer):
    async def cert(request: web.Request) -> web.Response:
        return web.Response(body=signer.cert_pem, content_type="application/x-x509-ca-cert")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/cert.pem")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"A" * (65 * 1024))

    app = web.Application()
    app.router.add_get("/cert.pem", cert)
    app.router.add_get("/missing.pem", missing)
    app.router.add_get("/moved.pem", moved)
    app.router.add_get("/huge.pem", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_default_fetcher_gets_the_certificate(signer, cert_server):
    verifier = SnsVerifier(timeout=2)
    try:
        assert await verifier._fetch_with_aiohttp(f"{cert_server}/cert.pem") == signer.cert_pem
        with pytest.raises(SnsCertificateUnavailable, match="HTTP 404"):
            await verifier._fetch_with_aiohttp(f"{cert_server}/missing.pem")
        with pytest.raises(SnsCertificateUnavailable, match="HTTP 302"):
            await verifier._fetch_with_aiohttp(f"{cert_server}/moved.pem")
        with pytest.raises(SnsCertificateUnavailable, match="too large"):
            await verifier._fetch_with_aiohttp(f"{cert_server}/huge.pem")
    finally:
        await verifier.close()
    assert verifier._session is None


# --- subscription confirmation ----------------------------------------------------------------

class Getter:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.urls: list[str] = []

    async def __call__(self, url: str) -> int:
        self.urls.append(url)
        return self.status


async def test_confirmation_gets_the_subscribe_url(signer, verifier):
    doc = signer.subscription_confirmation(token="abc123")
    await verifier.verify(doc)
    get = Getter()
    await confirm_subscription(doc, get)
    assert get.urls == [doc["SubscribeURL"]]
    assert get.urls[0].startswith("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&")
    assert "Token=abc123" in get.urls[0]


@pytest.mark.parametrize("url", [
    "https://evil.example.com/?Action=ConfirmSubscription&Token=x",
    "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x",
    "https://sns.us-east-1.amazonaws.com@127.0.0.1/?Action=ConfirmSubscription",
    "https://sns.us-east-1.amazonaws.com:8080/?Action=ConfirmSubscription",
    "https://169.254.169.254/latest/meta-data/",
])
async def test_confirmation_refuses_foreign_hosts(signer, verifier, url):
    doc = signer.subscription_confirmation(subscribe_url=url)
    await verifier.verify(doc)  # SNS's signature is fine; the URL is not
    get = Getter()
    with pytest.raises(SnsMessageError, match="SubscribeURL"):
        await confirm_subscription(doc, get)
    assert get.urls == []


async def test_confirmation_refused_by_sns_is_reported(signer):
    with pytest.raises(SnsMessageError, match="HTTP 403"):
        await confirm_subscription(signer.subscription_confirmation(), Getter(403))


async def test_confirmation_that_cannot_reach_sns_is_reported(signer):
    async def down(url: str) -> int:
        raise TimeoutError

    with pytest.raises(SnsMessageError, match="TimeoutError"):
        await confirm_subscription(signer.subscription_confirmation(), down)


async def test_only_a_subscription_confirmation_is_confirmed(signer):
    get = Getter()
    with pytest.raises(SnsMessageError):
        await confirm_subscription(signer.notification("x"), get)
    with pytest.raises(SnsMessageError):
        await confirm_subscription(signer.subscription_confirmation(kind="UnsubscribeConfirmation"), get)
    assert get.urls == []


# --- receipts: SES events ---------------------------------------------------------------------

@pytest.mark.parametrize("identity", [False, True])
async def test_ses_delivery(signer, verifier, identity):
    doc = signer.notification(ses_delivery(SES_ID, at="2017-08-05T00:41:02.669Z", identity=identity))
    await verifier.verify(doc)
    [r] = receipts_from(doc)
    assert r.provider == "ses"
    assert r.provider_message_id == SES_ID
    assert r.status == DeliveryStatus.DELIVERED
    assert r.at == dt.datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)
    assert r.at.utcoffset() == dt.timedelta(0)
    assert (r.error, r.address_undeliverable, r.keep_status) == (None, False, False)


@pytest.mark.parametrize("identity", [False, True])
def test_ses_permanent_bounce(signer, identity):
    [r] = receipts_from(signer.notification(ses_bounce(SES_ID, identity=identity)))
    assert (r.provider, r.provider_message_id, r.status) == ("ses", SES_ID, DeliveryStatus.FAILED)
    assert r.address_undeliverable is True
    assert r.keep_status is False
    assert r.error == "Permanent bounce (General): smtp; 550 5.1.1 user unknown"
    assert r.at == dt.datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)
    assert "recipient@example.com" not in r.error


def test_ses_bounce_without_diagnostic_uses_the_status(signer):
    record = ses_bounce(SES_ID, sub_type="Suppressed", status="5.1.1", diagnostic=None)
    [r] = receipts_from(signer.notification(record))
    assert r.error == "Permanent bounce (Suppressed): 5.1.1"
    assert r.address_undeliverable is True


@pytest.mark.parametrize("bounce_type,sub_type", [("Transient", "MailboxFull"), ("Undetermined", "Undetermined")])
def test_ses_soft_bounce_fails_but_keeps_the_address(signer, bounce_type, sub_type):
    record = ses_bounce(SES_ID, bounce_type=bounce_type, sub_type=sub_type, status="4.2.2",
                        diagnostic="smtp; 452 4.2.2 Mailbox full")
    [r] = receipts_from(signer.notification(record))
    assert r.status == DeliveryStatus.FAILED
    assert r.address_undeliverable is False
    assert r.error == f"{bounce_type} bounce ({sub_type}): smtp; 452 4.2.2 Mailbox full"


@pytest.mark.parametrize("identity", [False, True])
def test_ses_complaint_marks_the_address_and_keeps_the_status(signer, identity):
    [r] = receipts_from(signer.notification(ses_complaint(SES_ID, identity=identity)))
    assert (r.provider, r.provider_message_id) == ("ses", SES_ID)
    assert r.keep_status is True
    assert r.address_undeliverable is True
    assert r.status == DeliveryStatus.DELIVERED
    assert r.error == "complaint: abuse"
    assert r.at == dt.datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)


def test_ses_complaint_without_feedback_type(signer):
    [r] = receipts_from(signer.notification(ses_complaint(SES_ID, feedback_type=None)))
    assert r.error == "complaint: not specified"
    assert r.keep_status is True


def test_ses_complaint_for_a_suppressed_address_fails_the_delivery(signer):
    record = ses_complaint(SES_ID, feedback_type=None, sub_type="OnAccountSuppressionList")
    [r] = receipts_from(signer.notification(record))
    assert r.status == DeliveryStatus.FAILED
    assert r.keep_status is False
    assert r.address_undeliverable is True


def test_ses_reject(signer):
    sent = dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    [r] = receipts_from(signer.notification(ses_reject(SES_ID), at=sent))
    assert (r.provider_message_id, r.status) == (SES_ID, DeliveryStatus.FAILED)
    assert r.error == "rejected by SES: Bad content"
    assert r.at == sent  # the record has no time of its own: the SNS Timestamp
    assert r.address_undeliverable is False


def test_ses_rendering_failure(signer):
    [r] = receipts_from(signer.notification(ses_rendering_failure(SES_ID)))
    assert r.status == DeliveryStatus.FAILED
    assert r.error == "rendering failure: Attribute 'attributeName' is not present in the rendering data."


@pytest.mark.parametrize("record", [
    ses_send(SES_ID), ses_open(SES_ID), ses_delivery_delay(SES_ID),
    {"eventType": "Click", "mail": {"messageId": SES_ID}, "click": {}},
    {"eventType": "Subscription", "mail": {"messageId": SES_ID}, "subscription": {}},
    {"notificationType": "AmazonSnsSubscriptionSucceeded",
     "message": "You have successfully subscribed your Amazon SNS topic to receive notifications."},
])
def test_other_ses_events_are_no_receipts(signer, record):
    assert receipts_from(signer.notification(record)) == []


def test_ses_event_without_a_message_id_is_malformed(signer):
    record = ses_delivery(SES_ID)
    del record["mail"]["messageId"]
    with pytest.raises(SnsMessageError, match="messageId"):
        receipts_from(signer.notification(record))


def test_ses_event_with_a_bad_time_is_malformed(signer):
    record = ses_delivery(SES_ID, at="last tuesday")
    with pytest.raises(SnsMessageError, match=r"delivery\.timestamp"):
        receipts_from(signer.notification(record))


def test_ses_event_without_a_time_takes_the_sns_timestamp(signer):
    record = ses_bounce(SES_ID)
    del record["bounce"]["timestamp"]
    sent = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    [r] = receipts_from(signer.notification(record, at=sent))
    assert r.at == sent


# --- receipts: SMS delivery status ------------------------------------------------------------

SMS_ID = "34d9b400-c6dd-5444-820d-fbeb0f1f54cf"


async def test_sms_delivered(signer, verifier):
    doc = signer.notification(sms_status(SMS_ID, at="2016-06-28 00:40:34.558", device_ack_ms=1344))
    await verifier.verify(doc)
    [r] = receipts_from(doc)
    assert (r.provider, r.provider_message_id, r.status) == ("sns", SMS_ID, DeliveryStatus.DELIVERED)
    assert r.error is None
    # published at 00:40:34.558, acknowledged by the handset 1344 ms later
    assert r.at == dt.datetime(2016, 6, 28, 0, 40, 35, 902000, tzinfo=UTC)


def test_sms_delivered_without_device_ack_uses_the_dwell_time(signer):
    [r] = receipts_from(signer.notification(sms_status(SMS_ID, dwell_ms=599, device_ack_ms=None)))
    assert r.at == dt.datetime(2016, 6, 28, 0, 40, 35, 157000, tzinfo=UTC)


def test_sms_failed(signer):
    [r] = receipts_from(signer.notification(sms_status(SMS_ID, success=False)))
    assert (r.provider, r.provider_message_id, r.status) == ("sns", SMS_ID, DeliveryStatus.FAILED)
    assert r.error == "Unknown error attempting to reach phone"
    assert r.address_undeliverable is False


def test_delivery_status_of_a_topic_subscription_is_no_sms_receipt(signer):
    record = {"notification": {"messageId": SMS_ID, "topicArn": TOPIC_ARN,
                               "timestamp": "2020-02-23 15:52:51.904"},
              "delivery": {"deliveryId": "70cbac57-7eab-55be-8185-fa9bdddaf03a",
                           "destination": "https://example.com/callback", "providerResponse": "OK",
                           "dwellTimeMs": 349, "attempts": 1, "statusCode": 200},
              "status": "SUCCESS"}
    assert receipts_from(signer.notification(record)) == []


# --- receipts: everything else ----------------------------------------------------------------

@pytest.mark.parametrize("message", [
    {"hello": "world"}, [1, 2, 3], "42", "null", '"a JSON string"',
    {"status": "SUCCESS"}, {"status": "PENDING", "notification": {"messageId": "m"}},
])
def test_other_messages_are_no_receipts(signer, message):
    raw = message if isinstance(message, str) else json.dumps(message)
    assert receipts_from(signer.notification(raw)) == []


@pytest.mark.parametrize("raw", ["not json at all", '{"eventType": "Bounce"', ""])
def test_garbage_message_is_an_error(signer, raw):
    with pytest.raises(SnsMessageError, match="not JSON"):
        receipts_from(signer.notification(raw))


def test_confirmations_hold_no_receipts(signer):
    assert receipts_from(signer.subscription_confirmation()) == []
    assert receipts_from(signer.subscription_confirmation(kind="UnsubscribeConfirmation")) == []


def test_wire_form_round_trips(signer):
    doc = signer.notification(ses_bounce(SES_ID), subject="Amazon SES Email Event Notification")
    headers = signer.headers(doc)
    assert headers["x-amz-sns-message-type"] == "Notification"
    assert headers["x-amz-sns-topic-arn"] == TOPIC_ARN
    assert headers["Content-Type"].startswith("text/plain")
    assert json.loads(signer.body(doc)) == doc


def test_body_is_parsed_as_sns_posts_it(signer):
    doc = signer.notification(ses_delivery(SES_ID))
    assert parse_body(signer.body(doc)) == doc
    for bad in (b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b" " * (600 * 1024)):
        with pytest.raises(SnsMessageError):
            parse_body(bad)
