"""Amazon SNS HTTP(S) notifications that carry delivery receipts: proving a message comes from
SNS, confirming a topic subscription, and reading the SES and SMS events a notification holds.

Verification follows AWS's documented procedure. The signing certificate is fetched only from an
`https://sns.<region>.amazonaws.com[.cn]/….pem` URL (anything else is refused before any request,
so a forged message can neither bring its own certificate nor make this service call an address
of its choosing). The string to sign is each signed field's name and value, each followed by a
newline, in the fixed order AWS gives; SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA.
A message older than `max_age` (SNS stops retrying a delivery within an hour) is refused as a
replay.

A notification's `Message` is read as one of:
- an SES event, from a configuration set's SNS event destination (`eventType`) or an identity's
  feedback notifications (`notificationType`), matched by the SES message id;
- an SNS SMS delivery status record (`notification`, `delivery`, `status`), matched by the
  message id SNS Publish answered.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

if TYPE_CHECKING:
    import aiohttp

from ...domain.notifications import DeliveryStatus
from ...domain.receipts import Receipt

CertFetcher = Callable[[str], Awaitable[bytes]]

MESSAGE_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})

# The fields signed, in the order they are signed. A Notification's Subject is signed only when
# the message has one.
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_SUBSCRIPTION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                        "Type")
_ENVELOPE = ("Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion",
             "Signature", "SigningCertURL")

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_CERT_PATH = re.compile(r"/[A-Za-z0-9._/-]*\.pem")

CERT_CACHE_SIZE = 32
MAX_CERT_BYTES = 64 * 1024
MAX_BODY_BYTES = 512 * 1024  # SNS messages are at most 256 KB, before JSON escaping
MAX_AGE = timedelta(hours=1)
MAX_SKEW = timedelta(minutes=15)
_ERROR_LENGTH = 300


class SnsMessageError(ValueError):
    """A message that is malformed, or that cannot be shown to come from Amazon SNS."""


class SnsSignatureError(SnsMessageError):
    """The message is well formed but its signature, certificate URL or age is not acceptable."""


class SnsCertificateUnavailable(SnsMessageError):
    """The signing certificate could not be fetched or read; SNS may deliver the message again."""


def parse_body(body: bytes | str) -> dict[str, Any]:
    """The JSON document of an SNS POST (sent as `text/plain`)."""
    if len(body) > MAX_BODY_BYTES:
        raise SnsMessageError("the SNS message is too large")
    try:
        doc = json.loads(body)
    except ValueError:
        raise SnsMessageError("the SNS message is not JSON") from None
    if not isinstance(doc, dict):
        raise SnsMessageError("an SNS message is a JSON object")
    return doc


def sns_host(url: str) -> bool:
    """Whether `url` is an https URL on an SNS regional endpoint, with no user, port or other
    trick in its authority."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "https" and _SNS_HOST.fullmatch(parts.netloc) is not None


def certificate_url_allowed(url: str) -> bool:
    """Whether SNS could have published its signing certificate at `url`."""
    if not sns_host(url):
        return False
    parts = urlsplit(url)
    return not parts.query and not parts.fragment and _CERT_PATH.fullmatch(parts.path) is not None


def string_to_sign(doc: Mapping[str, Any]) -> bytes:
    """The text SNS signs for this message, per its Type."""
    kind = doc.get("Type")
    fields: tuple[str, ...]
    if kind == "Notification":
        fields = _SIGNED_NOTIFICATION
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        fields = _SIGNED_SUBSCRIPTION
    else:
        raise SnsMessageError(f"unknown SNS message Type {kind!r}")
    out = []
    for name in fields:
        value = doc.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsMessageError(f"the SNS message has no {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def parse_time(value: Any, what: str) -> datetime:
    """An ISO-8601 time (`…Z`, an offset, or naive and then UTC, as SNS SMS records write it) as
    an aware UTC datetime."""
    if not isinstance(value, str):
        raise SnsMessageError(f"{what} is not a time")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SnsMessageError(f"{what} is not an ISO-8601 time: {value[:40]!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _required(doc: Mapping[str, Any], kind: str) -> None:
    names = _ENVELOPE if kind == "Notification" else (*_ENVELOPE, "Token", "SubscribeURL")
    missing = [n for n in names if not isinstance(doc.get(n), str) or not doc.get(n)]
    if missing:
        raise SnsMessageError(f"the SNS {kind} lacks {', '.join(missing)}")
    subject = doc.get("Subject")
    if subject is not None and not isinstance(subject, str):
        raise SnsMessageError("the SNS message's Subject is not a string")


class SnsVerifier:
    """Checks SNS message signatures; signing certificates are cached by URL."""

    def __init__(self, fetch: CertFetcher | None = None, *, timeout: float = 5.0,
                 max_age: timedelta = MAX_AGE) -> None:
        self._fetch = fetch or self._fetch_with_aiohttp
        self._timeout = timeout
        self._max_age = max_age
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    async def verify(self, doc: Mapping[str, Any], *, now: datetime | None = None) -> None:
        """Raises SnsMessageError unless `doc` is a genuine, recent SNS message."""
        if not isinstance(doc, Mapping):
            raise SnsMessageError("an SNS message is a JSON object")
        kind = doc.get("Type")
        if kind not in MESSAGE_TYPES:
            raise SnsMessageError(f"unknown SNS message Type {kind!r}")
        _required(doc, kind)
        version = doc["SignatureVersion"]
        algorithm = _HASHES.get(version)
        if algorithm is None:
            raise SnsSignatureError(f"unsupported SNS SignatureVersion {version!r}")
        cert_url = doc["SigningCertURL"]
        if not certificate_url_allowed(cert_url):
            raise SnsSignatureError("the SigningCertURL is not an Amazon SNS certificate URL")
        sent = parse_time(doc["Timestamp"], "the SNS Timestamp")
        now = now or datetime.now(UTC)
        if now - sent > self._max_age:
            raise SnsSignatureError(f"the SNS message is too old (sent {sent.isoformat()})")
        if sent - now > MAX_SKEW:
            raise SnsSignatureError(f"the SNS message is dated in the future ({sent.isoformat()})")
        try:
            signature = base64.b64decode(doc["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise SnsMessageError("the SNS Signature is not base64") from None
        key = await self._key(cert_url)
        try:
            key.verify(signature, string_to_sign(doc), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsSignatureError("the SNS message signature does not verify") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is not None:
            self._keys.move_to_end(url)
            return key
        try:
            pem = await self._fetch(url)
        except SnsMessageError:
            raise
        except Exception as exc:
            raise SnsCertificateUnavailable(
                f"the SNS signing certificate could not be fetched: {type(exc).__name__}") from exc
        try:
            public = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise SnsCertificateUnavailable("the SNS signing certificate is not a PEM certificate") \
                from None
        if not isinstance(public, rsa.RSAPublicKey):
            raise SnsSignatureError("the SNS signing certificate does not hold an RSA key")
        self._keys[url] = public
        while len(self._keys) > CERT_CACHE_SIZE:
            self._keys.popitem(last=False)
        return public

    async def _fetch_with_aiohttp(self, url: str) -> bytes:
        """GETs the certificate; redirects are not followed (they could leave amazonaws.com).
        aiohttp is imported here, at the first message: the HTTP app starts without it."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar())
        async with self._session.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise SnsCertificateUnavailable(
                    f"the SNS signing certificate could not be fetched: HTTP {resp.status}")
            body = await resp.content.read(MAX_CERT_BYTES + 1)
        if len(body) > MAX_CERT_BYTES:
            raise SnsCertificateUnavailable("the SNS signing certificate is too large")
        return body


async def confirm_subscription(doc: Mapping[str, Any], get: Callable[[str], Awaitable[int]]) -> None:
    """Confirms a (verified) SubscriptionConfirmation by GETting its SubscribeURL, which must be
    on an SNS endpoint."""
    if doc.get("Type") != "SubscriptionConfirmation":
        raise SnsMessageError("only a SubscriptionConfirmation can be confirmed")
    url = doc.get("SubscribeURL")
    if not isinstance(url, str) or not sns_host(url):
        raise SnsSignatureError("the SubscribeURL is not an Amazon SNS URL")
    try:
        status = await get(url)
    except Exception as exc:
        raise SnsMessageError(
            f"confirming the SNS subscription failed: {type(exc).__name__}") from exc
    if not 200 <= status < 300:
        raise SnsMessageError(f"confirming the SNS subscription failed: HTTP {status}")


def receipts_from(doc: Mapping[str, Any]) -> list[Receipt]:
    """The delivery receipts a (verified) SNS Notification holds; none for other messages."""
    if doc.get("Type") != "Notification":
        return []
    raw = doc.get("Message")
    if not isinstance(raw, str):
        raise SnsMessageError("the SNS Notification has no Message")
    try:
        message = json.loads(raw)
    except ValueError:
        raise SnsMessageError("the SNS Message is not JSON") from None
    if not isinstance(message, dict):
        return []
    sent = parse_time(doc.get("Timestamp"), "the SNS Timestamp")
    kind = message.get("eventType") or message.get("notificationType")
    if isinstance(kind, str):
        return _ses(kind, message, sent)
    if message.get("status") in ("SUCCESS", "FAILURE") and isinstance(message.get("notification"), dict):
        return _sms(message, sent)
    return []


# --- SES events -------------------------------------------------------------------------------

def _object(message: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SnsMessageError(f"the SES event's {name} is not an object")
    return value


def _when(obj: Mapping[str, Any], default: datetime, what: str) -> datetime:
    value = obj.get("timestamp")
    return default if value is None else parse_time(value, what)


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _bounce_error(bounce: Mapping[str, Any]) -> str:
    kind = _text(bounce.get("bounceType")) or "Undetermined"
    sub = _text(bounce.get("bounceSubType"))
    details = []
    recipients = bounce.get("bouncedRecipients")
    for r in recipients if isinstance(recipients, list) else []:
        if isinstance(r, dict):
            detail = _text(r.get("diagnosticCode")) or _text(r.get("status"))
            if detail and detail not in details:
                details.append(detail)
    head = f"{kind} bounce" + (f" ({sub})" if sub else "")
    return (head + (": " + "; ".join(details) if details else ""))[:_ERROR_LENGTH]


def _ses(kind: str, message: Mapping[str, Any], sent: datetime) -> list[Receipt]:
    if kind not in ("Delivery", "Bounce", "Complaint", "Reject", "Rendering Failure"):
        return []  # Send, Open, Click, DeliveryDelay, Subscription, AmazonSnsSubscriptionSucceeded…
    mail = _object(message, "mail")
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise SnsMessageError(f"the SES {kind} event has no mail.messageId")

    def receipt(status: DeliveryStatus, at: datetime, error: str | None = None, *,
                address_undeliverable: bool = False, keep_status: bool = False) -> list[Receipt]:
        return [Receipt("ses", message_id, status, at, error,
                        address_undeliverable=address_undeliverable, keep_status=keep_status)]

    if kind == "Delivery":
        delivery = _object(message, "delivery")
        return receipt(DeliveryStatus.DELIVERED, _when(delivery, sent, "delivery.timestamp"))
    if kind == "Bounce":
        bounce = _object(message, "bounce")
        return receipt(DeliveryStatus.FAILED, _when(bounce, sent, "bounce.timestamp"),
                       _bounce_error(bounce),
                       address_undeliverable=bounce.get("bounceType") == "Permanent")
    if kind == "Complaint":
        complaint = _object(message, "complaint")
        at = _when(complaint, sent, "complaint.timestamp")
        if complaint.get("complaintSubType") == "OnAccountSuppressionList":
            # SES accepted the message but did not send it: the address is suppressed.
            return receipt(DeliveryStatus.FAILED, at,
                           "complaint: the address is on the account's suppression list",
                           address_undeliverable=True)
        feedback = _text(complaint.get("complaintFeedbackType")) or "not specified"
        return receipt(DeliveryStatus.DELIVERED, at, f"complaint: {feedback}"[:_ERROR_LENGTH],
                       address_undeliverable=True, keep_status=True)
    if kind == "Reject":
        reason = _text(_object(message, "reject").get("reason")) or "no reason given"
        return receipt(DeliveryStatus.FAILED, sent, f"rejected by SES: {reason}"[:_ERROR_LENGTH])
    failure = _object(message, "failure")
    detail = _text(failure.get("errorMessage")) or "no detail given"
    return receipt(DeliveryStatus.FAILED, sent, f"rendering failure: {detail}"[:_ERROR_LENGTH])


# --- SNS SMS delivery status ------------------------------------------------------------------

def _sms(record: Mapping[str, Any], sent: datetime) -> list[Receipt]:
    """An SMS delivery status record. Its time is the publish time plus the dwell time until the
    handset acknowledged (or, without that, until the carrier took the message)."""
    notification = _object(record, "notification")
    delivery = _object(record, "delivery")
    destination = delivery.get("destination")
    if "smsType" not in delivery and not (isinstance(destination, str) and destination.startswith("+")):
        return []  # the status of a topic or mobile push delivery, not of an SMS
    message_id = notification.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise SnsMessageError("the SMS delivery status has no notification.messageId")
    at = _when(notification, sent, "notification.timestamp")
    dwell = delivery.get("dwellTimeMsUntilDeviceAck", delivery.get("dwellTimeMs"))
    if isinstance(dwell, int | float) and not isinstance(dwell, bool) and 0 <= dwell < 7 * 86_400_000:
        at += timedelta(milliseconds=dwell)
    if record["status"] == "SUCCESS":
        return [Receipt("sns", message_id, DeliveryStatus.DELIVERED, at)]
    error = _text(delivery.get("providerResponse")) or "SMS delivery failed"
    return [Receipt("sns", message_id, DeliveryStatus.FAILED, at, error[:_ERROR_LENGTH])]
