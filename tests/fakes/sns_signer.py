"""Amazon SNS's side of an HTTP(S) subscription, for tests: messages signed as SNS signs them.

`SnsSigner` holds a throwaway RSA key and a self-signed X.509 certificate for it, "published" at
an SNS-looking certificate URL that only `fetcher` serves (it records every URL asked for). Its
documents are what SNS POSTs to a subscribed endpoint (JSON, `Content-Type: text/plain`), with
the headers SNS sends; the string to sign is built here from AWS's documentation, apart from
the code under test, so a mistake there makes verification fail.

The `ses_*` and `sms_status` functions build the event records that SES and SNS put in a
notification's `Message`, shaped like the examples in AWS's documentation.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:tidings-ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"

_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}
_DIGESTS = {"1": hashes.SHA1, "2": hashes.SHA256}


@lru_cache(maxsize=4)
def _keypair(label: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A 2048-bit key and a self-signed certificate for it, made once per label per session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sns.amazonaws.com ({label})")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def timestamp(when: dt.datetime) -> str:
    """SNS's Timestamp format: UTC with milliseconds and a Z."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def canonical(doc: dict[str, Any]) -> bytes:
    out = ""
    for name in _SIGNED[doc["Type"]]:
        if name in doc:
            out += f"{name}\n{doc[name]}\n"
    return out.encode()


@dataclass
class SnsSigner:
    label: str = "sns"
    region: str = "us-east-1"
    cert_url: str = CERT_URL
    fetched: list[str] = field(default_factory=list)

    @property
    def cert_pem(self) -> bytes:
        return _keypair(self.label)[1]

    async def fetcher(self, url: str) -> bytes:
        """Serves the certificate at `cert_url`, as SNS's endpoint would; nothing else exists."""
        self.fetched.append(url)
        if url != self.cert_url:
            raise LookupError(f"404 Not Found: {url}")
        return self.cert_pem

    def sign(self, doc: dict[str, Any], version: str = "2") -> dict[str, Any]:
        """Sets SignatureVersion, SigningCertURL and Signature for `doc` as it stands."""
        doc["SignatureVersion"] = version
        doc["SigningCertURL"] = self.cert_url
        key = _keypair(self.label)[0]
        signature = key.sign(canonical(doc), padding.PKCS1v15(), _DIGESTS[version]())
        doc["Signature"] = base64.b64encode(signature).decode("ascii")
        return doc

    def notification(self, message: dict[str, Any] | str, topic_arn: str = TOPIC_ARN,
                     version: str = "2", *, subject: str | None = None,
                     at: dt.datetime | None = None, message_id: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic_arn,
        }
        if subject is not None:
            doc["Subject"] = subject
        doc["Message"] = message if isinstance(message, str) else json.dumps(message)
        doc["Timestamp"] = timestamp(at or dt.datetime.now(dt.UTC))
        self.sign(doc, version)
        doc["UnsubscribeURL"] = (f"https://sns.{self.region}.amazonaws.com/?Action=Unsubscribe"
                                 f"&SubscriptionArn={topic_arn}:{uuid.uuid4()}")
        return doc

    def subscription_confirmation(self, topic_arn: str = TOPIC_ARN, version: str = "2", *,
                                  token: str | None = None, at: dt.datetime | None = None,
                                  subscribe_url: str | None = None,
                                  kind: str = "SubscriptionConfirmation") -> dict[str, Any]:
        """A SubscriptionConfirmation (or, with `kind`, an UnsubscribeConfirmation)."""
        token = token or uuid.uuid4().hex * 4
        if kind == "SubscriptionConfirmation":
            text = (f"You have chosen to subscribe to the topic {topic_arn}.\n"
                    "To confirm the subscription, visit the SubscribeURL included in this message.")
        else:
            text = (f"You have chosen to deactivate subscription {topic_arn}:{uuid.uuid4()}.\n"
                    "To cancel this operation and restore the subscription, visit the SubscribeURL"
                    " included in this message.")
        doc: dict[str, Any] = {
            "Type": kind,
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic_arn,
            "Message": text,
            "SubscribeURL": subscribe_url or (
                f"https://sns.{self.region}.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={quote(topic_arn, safe=':')}&Token={token}"),
            "Timestamp": timestamp(at or dt.datetime.now(dt.UTC)),
        }
        return self.sign(doc, version)

    @staticmethod
    def headers(doc: dict[str, Any]) -> dict[str, str]:
        """The HTTP headers SNS sends with `doc`."""
        out = {
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent",
            "x-amz-sns-message-type": doc["Type"],
            "x-amz-sns-message-id": doc["MessageId"],
            "x-amz-sns-topic-arn": doc["TopicArn"],
        }
        if doc["Type"] == "Notification":
            out["x-amz-sns-subscription-arn"] = doc["UnsubscribeURL"].rpartition("=")[2]
        return out

    @staticmethod
    def body(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc, indent=2).encode()


# --- what SES publishes (configuration set event destinations use eventType; identity feedback
# notifications use notificationType) ------------------------------------------------------------

def _mail(message_id: str, recipient: str) -> dict[str, Any]:
    return {
        "timestamp": "2017-08-05T00:40:02.012Z",
        "source": "Sender Name <sender@example.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": "From", "value": "Sender Name <sender@example.com>"},
                    {"name": "To", "value": recipient},
                    {"name": "Subject", "value": "Message sent from Amazon SES"}],
        "commonHeaders": {"from": ["Sender Name <sender@example.com>"], "to": [recipient],
                          "messageId": message_id, "subject": "Message sent from Amazon SES"},
        "tags": {"ses:configuration-set": ["ConfigSet"], "ses:source-ip": ["192.0.2.0"],
                 "ses:from-domain": ["example.com"], "ses:caller-identity": ["ses_user"]},
    }


def _event(kind: str, message_id: str, recipient: str, identity: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"notificationType" if identity else "eventType": kind}
    record["mail"] = _mail(message_id, recipient)
    if identity:
        del record["mail"]["tags"]
    return record


def ses_delivery(message_id: str, recipient: str = "recipient@example.com", *,
                 at: str = "2017-08-05T00:41:02.669Z", identity: bool = False) -> dict[str, Any]:
    record = _event("Delivery", message_id, recipient, identity)
    record["delivery"] = {"timestamp": at, "processingTimeMillis": 1234, "recipients": [recipient],
                          "smtpResponse": "250 2.6.0 Message received",
                          "reportingMTA": "a8-70.smtp-out.amazonses.com"}
    return record


def ses_bounce(message_id: str, recipient: str = "recipient@example.com", *,
               bounce_type: str = "Permanent", sub_type: str = "General",
               status: str = "5.1.1", diagnostic: str | None = "smtp; 550 5.1.1 user unknown",
               at: str = "2017-08-05T00:41:02.669Z", identity: bool = False) -> dict[str, Any]:
    record = _event("Bounce", message_id, recipient, identity)
    bounced: dict[str, Any] = {"emailAddress": recipient, "action": "failed", "status": status}
    if diagnostic is not None:
        bounced["diagnosticCode"] = diagnostic
    record["bounce"] = {
        "bounceType": bounce_type, "bounceSubType": sub_type, "bouncedRecipients": [bounced],
        "timestamp": at, "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "reportingMTA": "dsn; mta.example.com",
    }
    return record


def ses_complaint(message_id: str, recipient: str = "recipient@example.com", *,
                  feedback_type: str | None = "abuse", sub_type: str | None = None,
                  at: str = "2017-08-05T00:41:02.669Z", identity: bool = False) -> dict[str, Any]:
    record = _event("Complaint", message_id, recipient, identity)
    complaint: dict[str, Any] = {
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "complaintSubType": sub_type,
        "complainedRecipients": [{"emailAddress": recipient}],
        "timestamp": at,
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
        "arrivalDate": "2017-08-05T00:41:02.669Z",
    }
    if feedback_type is not None:
        complaint["complaintFeedbackType"] = feedback_type
    record["complaint"] = complaint
    return record


def ses_reject(message_id: str, recipient: str = "recipient@example.com") -> dict[str, Any]:
    record = _event("Reject", message_id, recipient, False)
    record["reject"] = {"reason": "Bad content"}
    return record


def ses_rendering_failure(message_id: str, recipient: str = "recipient@example.com") -> dict[str, Any]:
    record = _event("Rendering Failure", message_id, recipient, False)
    record["failure"] = {"errorMessage": "Attribute 'attributeName' is not present in the rendering data.",
                         "templateName": "MyTemplate"}
    return record


def ses_send(message_id: str, recipient: str = "recipient@example.com") -> dict[str, Any]:
    record = _event("Send", message_id, recipient, False)
    record["send"] = {}
    return record


def ses_delivery_delay(message_id: str, recipient: str = "recipient@example.com") -> dict[str, Any]:
    record = _event("DeliveryDelay", message_id, recipient, False)
    record["deliveryDelay"] = {
        "timestamp": "2020-06-16T00:15:40.641Z", "delayType": "TransientCommunicationFailure",
        "expirationTime": "2020-06-16T00:25:40.914Z",
        "delayedRecipients": [{"emailAddress": recipient, "status": "4.4.1",
                               "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host"}],
    }
    return record


def ses_open(message_id: str, recipient: str = "recipient@example.com") -> dict[str, Any]:
    record = _event("Open", message_id, recipient, False)
    record["open"] = {"ipAddress": "192.0.2.1", "timestamp": "2017-08-09T22:00:19.652Z",
                      "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X)"}
    return record


# --- what SNS writes for an SMS's delivery status ---------------------------------------------

def sms_status(message_id: str, *, success: bool = True, phone: str = "+15555550100",
               at: str = "2016-06-28 00:40:34.558", dwell_ms: int = 599,
               device_ack_ms: int | None = 1344,
               response: str | None = None) -> dict[str, Any]:
    delivery: dict[str, Any] = {
        "phoneCarrier": "My Phone Carrier", "mnc": 270 if success else 0, "destination": phone,
        "priceInUSD": 0.00645, "smsType": "Transactional", "mcc": 310 if success else 0,
        "providerResponse": response or ("Message has been accepted by phone carrier" if success
                                         else "Unknown error attempting to reach phone"),
        "dwellTimeMs": dwell_ms,
    }
    if device_ack_ms is not None:
        delivery["dwellTimeMsUntilDeviceAck"] = device_ack_ms
    return {"notification": {"messageId": message_id, "timestamp": at}, "delivery": delivery,
            "status": "SUCCESS" if success else "FAILURE"}
