"""The `webpush` provider: Web Push (RFC 8030) straight to each browser's push service, the
payload encrypted for that browser alone (RFC 8291, the aes128gcm coding of RFC 8188) and the
sender identified by VAPID (RFC 8292).

A device's token is the browser's PushSubscription as JSON: `{"endpoint", "keys": {"p256dh",
"auth"}}`. Every subscription names its own push service, so there is nothing for the
settings' `endpoint` to point at: it is accepted and ignored. The endpoint comes from the
browser, that is from the user, so unless `allow_private_webhooks` is set only https endpoints
whose host is (and resolves to) a public address are contacted (the guard of `ssrf`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import jwt
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)
from yarl import URL

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent, TargetInvalid
from .http import TRANSPORT_ERRORS, LazySession, gather_bounded, retry_after, transport_retry
from .options import ProviderOptions
from .overrides import merge
from .ssrf import literal_problem, refusal

log = logging.getLogger("tidings.provider.webpush")

DEFAULT_TTL = 28 * 24 * 3600  # what the big push services keep a message at most
# RFC 8030 lets a push service refuse bodies over 4096 octets; the aes128gcm header (86) and
# the record's tag and delimiter (17) leave this much for the plaintext (RFC 8291, section 4).
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
RECORD_SIZE = 4096
JWT_LIFETIME = 12 * 3600  # RFC 8292: at most 24 h ahead of the request
JWT_RENEW_BEFORE = 3600  # a cached token is replaced when less than this is left of it
MAX_ANSWER_BYTES = 16_384
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
SUBSCRIPTION_HEADERS = {"ttl": "TTL", "urgency": "Urgency", "topic": "Topic"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    """Base64url with or without padding; the standard alphabet is taken too, since some
    clients serialise keys with it."""
    text = value.strip().rstrip("=").replace("+", "-").replace("/", "_")
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


# --- the subscription -----------------------------------------------------------------------
@dataclass(frozen=True)
class Subscription:
    endpoint: URL
    origin: str  # the VAPID audience
    p256dh: bytes  # the browser's key, an uncompressed P-256 point
    key: ec.EllipticCurvePublicKey  # the same, ready for ECDH
    auth: bytes


@functools.lru_cache(maxsize=4096)
def parse_subscription(target: str) -> Subscription:
    """The browser's PushSubscription JSON; ValueError says what is wrong with it. Kept for
    the devices sent to again and again (every broadcast reaches the same browsers)."""
    try:
        doc = orjson.loads(target)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
        raise ValueError("expected {endpoint, keys: {p256dh, auth}}")
    endpoint, keys = doc.get("endpoint"), doc["keys"]
    if not isinstance(endpoint, str) or len(endpoint) > 2048:
        raise ValueError("endpoint must be a URL")
    url = URL(endpoint)
    if url.scheme != "https" or not url.host or url.user is not None:
        raise ValueError("endpoint must be an https URL")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    if not isinstance(p256dh, str) or not isinstance(auth, str):
        raise ValueError("keys.p256dh and keys.auth must be strings")
    try:
        point, secret = b64url_decode(p256dh), b64url_decode(auth)
    except (binascii.Error, ValueError):
        raise ValueError("keys must be base64url") from None
    if len(point) != 65 or point[0] != 4:
        raise ValueError("keys.p256dh must be an uncompressed P-256 point")
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("keys.p256dh is not a point of P-256") from None
    if len(secret) != 16:
        raise ValueError("keys.auth must be 16 bytes")
    return Subscription(url, str(url.origin()), point, public, secret)


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) for outputs of one block, all that RFC 8291 asks for."""
    return hmac.digest(hmac.digest(salt, ikm, "sha256"), info + b"\x01", "sha256")[:length]


def encrypt(plaintext: bytes, sub: Subscription, *, sender: ec.EllipticCurvePrivateKey | None = None,
            salt: bytes | None = None) -> bytes:
    """The aes128gcm body of RFC 8291: one record, keyed by ECDH between a fresh key pair of
    ours (`sender` and `salt` are given only to reproduce a known answer) and the browser's.

    Written on `cryptography` rather than with `http_ece`, which spends more time per message
    for the same bytes (measured; a broadcast encrypts once per browser). The RFC's own example
    pins the output in the tests."""
    sender = sender or ec.generate_private_key(ec.SECP256R1())
    salt = salt or os.urandom(16)
    sender_point = sender.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    ikm = _hkdf(sub.auth, sender.exchange(ec.ECDH(), sub.key),
                b"WebPush: info\x00" + sub.p256dh + sender_point, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: the last record
    return salt + RECORD_SIZE.to_bytes(4, "big") + bytes([len(sender_point)]) + sender_point + record


# --- VAPID ----------------------------------------------------------------------------------
def load_vapid_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key as PEM, as the bare 32-byte scalar in base64url (what web-push
    libraries print), or as base64url DER."""
    text = value.strip()
    if "-----BEGIN" in text:
        key: Any = load_pem_private_key(text.encode(), password=None)
    else:
        raw = b64url_decode(text)
        if len(raw) == 32:
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        else:
            key = load_der_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the VAPID key must be a P-256 (prime256v1) EC key")
    return key


class Vapid:
    """Signs `Authorization: vapid t=…, k=…` headers, one token per push service origin, kept
    until it nears its expiry."""

    def __init__(self, private_key: str, subject: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = load_vapid_key(private_key)
        self.subject = subject
        self.public_key = b64url(self.key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint))
        self.clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def authorization(self, audience: str) -> str:
        now = self.clock()
        cached = self._cache.get(audience)
        if cached is not None and now < cached[1]:
            return cached[0]
        exp = int(now) + JWT_LIFETIME
        token = jwt.encode({"aud": audience, "exp": exp, "sub": self.subject}, self.key,
                           algorithm="ES256", headers={"typ": "JWT"})
        header = f"vapid t={token}, k={self.public_key}"
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[audience] = (header, exp - JWT_RENEW_BEFORE)
        return header


# --- the message ----------------------------------------------------------------------------
def payload(m: OutboundMessage) -> dict[str, Any]:
    """What the service worker's `push` event reads with `event.data.json()`."""
    doc: dict[str, Any] = {"title": m.title, "body": m.body, "data": m.data or {},
                           "notification_id": m.notification_id, "tag": m.collapse_key}
    doc = {k: v for k, v in doc.items() if v is not None}
    webpush = m.overrides.get("webpush") or {}
    if isinstance(webpush.get("data"), Mapping):
        doc["data"] = merge(doc["data"], webpush["data"])
    if isinstance(webpush.get("notification"), Mapping):
        doc = merge(doc, webpush["notification"])
    return doc


def topic(key: str) -> str:
    """RFC 8030 topics are at most 32 base64url characters; a longer or other key is hashed,
    which keeps equal keys equal."""
    if TOPIC.fullmatch(key):
        return key
    return b64url(hashlib.sha256(key.encode()).digest())[:32]


def push_headers(m: OutboundMessage) -> dict[str, str]:
    """TTL, Urgency and Topic (RFC 8030, section 5), then those of overrides["webpush"]
    ["headers"]; ValueError for a value a push service would refuse."""
    headers = {"TTL": str(DEFAULT_TTL if m.ttl is None else max(m.ttl, 0)),
               "Urgency": "high" if m.priority == "high" else "normal"}
    if m.collapse_key:
        headers["Topic"] = topic(m.collapse_key)
    extra = (m.overrides.get("webpush") or {}).get("headers") or {}
    for name, value in extra.items() if isinstance(extra, Mapping) else ():
        canonical = SUBSCRIPTION_HEADERS.get(str(name).lower())
        text = str(value).strip()
        if canonical == "TTL" and not text.isdigit():
            raise ValueError("webpush.headers.TTL must be a number of seconds")
        if canonical == "Urgency" and text not in URGENCIES:
            raise ValueError(f"webpush.headers.Urgency must be one of {', '.join(sorted(URGENCIES))}")
        if canonical == "Topic":
            text = topic(text)
        if canonical:
            headers[canonical] = text
    return headers


def message_id(location: str | None) -> str | None:
    """The push message resource (RFC 8030, section 5) names the message by its last segment."""
    if not location:
        return None
    last = URL(location).path.rstrip("/").rpartition("/")[2]
    return last[:255] or None


def detail(body: bytes) -> str:
    """A push service's words on a refusal: JSON `reason`/`message`/`error`, or the text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        for key in ("reason", "message", "error"):
            if isinstance(doc.get(key), str):
                return " ".join(doc[key].split())[:200]
    return " ".join(body.decode("utf-8", "replace").split())[:200]


def answer(status: int, headers: Mapping[str, str], body: bytes) -> SendResult:
    if status in (200, 201, 202):
        return Sent(message_id(headers.get("Location")))
    try:
        what = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        what = str(status)
    said = detail(body)
    reason = f"{what}: {said}" if said else what
    if status in (404, 410):
        return TargetInvalid(f"subscription gone ({reason})")
    if status in (400, 413):
        return Failed(reason)
    if status in (401, 403):
        return Failed(f"VAPID credentials refused, is this the key the browser subscribed "
                      f"with? ({reason})")
    if status == 429 or status >= 500:
        return Retry(reason, after=retry_after(headers.get("Retry-After")))
    return Retry(f"unexpected answer {reason}")


def unsent(exc: BaseException, sub: Subscription) -> Retry:
    """A transport failure, without the endpoint's path: it is the subscription's secret."""
    retry = transport_retry(exc)
    return Retry(retry.reason.replace(str(sub.endpoint), f"{sub.origin}/…"), retry.after)


# --- the provider ---------------------------------------------------------------------------
class WebPushProvider:
    name = "webpush"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self.max_concurrency = options.max_concurrency
        self._allow_private = options.allow_private_webhooks
        self._session = LazySession(options, public_only=True)
        self.vapid: Vapid | None = None
        self._broken: str | None = None
        try:
            self.vapid = Vapid(str(config.get("vapid_private_key", "")),
                               str(config.get("vapid_subject", "")))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # binascii.Error is a ValueError
            self._broken = f"webpush.vapid_private_key is unusable: {exc}"

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if self._broken is not None:
            return [Failed(self._broken)] * len(messages)
        return await gather_bounded(messages, self.max_concurrency, self._send_one)

    async def _send_one(self, m: OutboundMessage) -> SendResult:
        assert self.vapid is not None
        try:
            sub = parse_subscription(m.target)
        except ValueError as exc:
            return TargetInvalid(f"malformed subscription: {exc}")
        if not self._allow_private and literal_problem(sub.endpoint):
            return TargetInvalid("the subscription's endpoint is a private address")
        try:
            headers = push_headers(m)
            plaintext = orjson.dumps(payload(m))
        except (ValueError, TypeError) as exc:
            return Failed(str(exc))
        if len(plaintext) > MAX_PLAINTEXT:
            return Failed(f"payload is {len(plaintext)} bytes; Web Push carries at most "
                          f"{MAX_PLAINTEXT}")
        headers.update({"Content-Encoding": "aes128gcm",
                        "Content-Type": "application/octet-stream",
                        "Authorization": self.vapid.authorization(sub.origin)})
        body = encrypt(plaintext, sub)
        try:
            async with self._session.get().post(sub.endpoint, data=body, headers=headers,
                                                allow_redirects=False) as resp:
                said = await resp.content.read(MAX_ANSWER_BYTES)
                result = answer(resp.status, resp.headers, said)
        except TRANSPORT_ERRORS as exc:
            if refusal(exc):
                return TargetInvalid("the subscription's endpoint resolves to a private address")
            return unsent(exc, sub)
        if isinstance(result, Failed):
            log.warning("webpush to %s refused message %s: %s", sub.origin, m.delivery_id,
                        result.reason)
        return result

    async def close(self) -> None:
        await self._session.close()
