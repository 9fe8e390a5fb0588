"""Standard Webhooks (https://www.standardwebhooks.com): signing secrets, the symmetric `v1`
signature over `{msg_id}.{timestamp}.{body}`, its headers, and the event envelope.

Kept free of I/O so that the sender (the `webhook` channel, the app's event webhook) and every
receiver in the tests sign and verify with one implementation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import Unauthenticated

SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format's marker, not a secret
SIGNATURE_VERSION = "v1"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE = 300  # seconds either side of the receiver's clock

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(Unauthenticated):
    """A request that does not carry a valid, fresh Standard Webhooks signature."""

    title = "Invalid webhook signature"
    kind = "webhook-signature"


def new_secret(size: int = 32) -> str:
    """A fresh signing secret: `whsec_` + base64 of `size` random bytes (24-64)."""
    if not MIN_SECRET_BYTES <= size <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a serialized secret stands for. Raises ValueError when `secret` is not
    `whsec_` + base64 of 24-64 bytes (the prefix may be left out, as the reference libraries
    allow)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be 'whsec_' followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"must encode {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} random bytes")
    return key


def is_secret(value: str) -> bool:
    """True for a well-formed `whsec_` secret (the form this service hands out and accepts)."""
    if not value.startswith(SECRET_PREFIX):
        return False
    try:
        secret_key(value)
    except ValueError:
        return False
    return True


def _check_id(msg_id: str) -> None:
    # The signed content is dot-delimited: an id with a dot could shift the boundary.
    if not msg_id or "." in msg_id or any(c.isspace() for c in msg_id):
        raise ValueError("a webhook id must be non-empty, without dots or spaces")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}." + body>` keyed with the secret."""
    _check_id(msg_id)
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(secret: str | Sequence[str], msg_id: str, timestamp: int,
            body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers. Several secrets (the new one and the one being
    retired) give several space-separated signatures, so a receiver rotates without a gap."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(int(timestamp)),
        HEADER_SIGNATURE: " ".join(sign(k, msg_id, timestamp, body) for k in keys),
    }


def _header(values: Mapping[str, str], name: str) -> str | None:
    found = values.get(name)
    if found is not None:
        return found
    for key, value in values.items():
        if key.lower() == name:
            return value
    return None


def _epoch(now: int | float | datetime) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: int | float | datetime,
           tolerance: int = DEFAULT_TOLERANCE) -> None:
    """Check a received webhook: the three headers are present, the timestamp is within
    `tolerance` seconds of `now` (both ways: a replay or a forged future time), and one of the
    `v1` signatures matches (compared in constant time). Raises WebhookVerificationError."""
    msg_id = _header(headers, HEADER_ID)
    stamp = _header(headers, HEADER_TIMESTAMP)
    given = _header(headers, HEADER_SIGNATURE)
    if not msg_id or not stamp or not given:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    skew = _epoch(now) - timestamp
    if skew > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if skew < -tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")
    try:
        expected = sign(secret, msg_id, timestamp, body).partition(",")[2].encode()
    except ValueError as exc:
        raise WebhookVerificationError(f"cannot verify: {exc}") from None
    for candidate in given.split():
        version, _, signature = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(signature.encode(), expected):
            return
    raise WebhookVerificationError("no matching signature")


_last: tuple[datetime | None, str] = (None, "")


def iso(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`, as everywhere in the API.

    The last answer is kept: the items of one send (up to 1,000) share their time object, and
    formatting it again for each was a sixteenth of answering the send."""
    global _last
    last_when, last_text = _last
    if when is last_when:
        return last_text
    if when.tzinfo is UTC:  # what the store and the clock give: the short way
        text = when.isoformat(timespec="milliseconds")[:23] + "Z"
    else:
        aware = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        text = aware.isoformat(timespec="milliseconds")[:23] + "Z"
    _last = (when, text)
    return text


def event(type: str, data: Mapping[str, Any], timestamp: datetime | int | float) -> dict[str, Any]:
    """The payload envelope: `{"type": "delivery.sent", "timestamp": <RFC 3339>, "data": {...}}`;
    `timestamp` is when the event happened (a retry keeps it; the signature carries the
    attempt's own time)."""
    when = timestamp if isinstance(timestamp, datetime) else datetime.fromtimestamp(timestamp, UTC)
    return {"type": type, "timestamp": iso(when), "data": dict(data)}
