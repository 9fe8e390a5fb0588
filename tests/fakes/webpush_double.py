"""A Web Push service on loopback, with the browsers subscribed to it.

It does what a real push service checks (RFC 8030, RFC 8292): the VAPID JWT's ES256 signature
against the `k=` key, its audience (this service's origin), `exp` in the future and at most
24 h ahead, `sub`, the key the subscription was restricted to, TTL/Urgency/Topic, the content
coding and the 4096-octet body limit. Then it does what the browser does (RFC 8291): decrypts
the aes128gcm body with the subscription's private key and auth secret, using web-push-libs'
`http_ece`, a different implementation from the provider's own. Each subscription can be told to
answer an error instead: `sub.answer(410)`, `sub.answer(429, headers={"Retry-After": "120"})`,
`sub.answer_garbage()`, `sub.answer_slowly(seconds)`.

Served over TLS with the test CA of `tests.fakes.tls` (`service.client_ssl()` trusts it), since
subscription endpoints are https URLs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.fakes.loopback import AiohttpDouble, garbage
from tests.fakes.tls import loopback_tls

MAX_BODY = 4096
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


# --- keys an app server would configure -----------------------------------------------------
@dataclass
class VapidKeys:
    """An application server's VAPID key pair in the forms people paste into settings."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def pem(self) -> str:
        return self.key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()

    @property
    def raw(self) -> str:
        """The bare private scalar, base64url, as `web-push generate-vapid-keys` prints it."""
        return b64url(self.key.private_numbers().private_value.to_bytes(32, "big"))

    @property
    def public(self) -> bytes:
        return public_bytes(self.key)


# --- the browser side -----------------------------------------------------------------------
def decrypt(body: bytes, receiver: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """What the browser does (RFC 8291 section 3, RFC 8188 section 2), with web-push-libs'
    `http_ece`, after checking what a push message must be: a single record whose keyid is
    the sender's P-256 key."""
    if len(body) < 21:
        raise ValueError("shorter than an aes128gcm header")
    rs, idlen = int.from_bytes(body[16:20], "big"), body[20]
    if idlen != 65 or body[21] != 4:
        raise ValueError(f"keyid must be the sender's uncompressed P-256 key, got {idlen} octets")
    if rs < 18 or len(body) - 21 - idlen > rs:
        raise ValueError("a push message is one record of at most rs octets")
    try:
        return bytes(http_ece.decrypt(body, private_key=receiver, auth_secret=auth, version="aes128gcm"))
    except http_ece.ECEException as exc:
        raise ValueError(exc.message) from None


@dataclass
class Delivered:
    payload: dict[str, Any]
    ttl: str
    urgency: str | None
    topic: str | None
    claims: dict[str, Any]
    vapid_key: str
    authorization: str
    message_id: str  # the last segment of the Location answered


@dataclass
class Reply:
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    garbage: bool = False
    delay: float = 0.0


class BrowserSubscription:
    """What `pushManager.subscribe()` gives a page: an endpoint and the keys to encrypt for."""

    def __init__(self, base: str, application_server_key: bytes | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = uuid.uuid4().bytes
        self.endpoint = f"{base}/push/{self.id}"
        self.application_server_key = application_server_key
        self.replies: deque[Reply] = deque()
        self.received: list[Delivered] = []
        self.requests = 0

    @property
    def json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint,
                "keys": {"p256dh": b64url(public_bytes(self.key)), "auth": b64url(self.auth)}}

    @property
    def token(self) -> str:
        return json.dumps(self.json, separators=(",", ":"), sort_keys=True)

    def answer(self, status: int, body: bytes | dict[str, Any] = b"", headers: dict[str, str] | None = None,
               times: int = 1) -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self.replies.extend(Reply(status, headers or {}, raw) for _ in range(times))

    def answer_garbage(self) -> None:
        self.replies.append(Reply(garbage=True))

    def answer_slowly(self, seconds: float) -> None:
        self.replies.append(Reply(delay=seconds))


# --- the push service -----------------------------------------------------------------------
class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class PushService(AiohttpDouble):
    def __init__(self) -> None:
        super().__init__()
        self.server_ssl = loopback_tls().server_context(alpn=())
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.errors: list[str] = []  # every request refused by a check, with the reason
        self.requests = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/push/{id}", self._push)
        return app

    @staticmethod
    def client_ssl() -> ssl.SSLContext:
        return loopback_tls().client_context()

    @property
    def origins(self) -> list[str]:
        return [f"https://127.0.0.1:{self.port}", f"https://localhost:{self.port}"]

    def subscribe(self, application_server_key: bytes | None = None,
                  host: str = "127.0.0.1") -> BrowserSubscription:
        sub = BrowserSubscription(f"https://{host}:{self.port}", application_server_key)
        self.subscriptions[sub.id] = sub
        return sub

    @property
    def delivered(self) -> list[Delivered]:
        return [d for s in self.subscriptions.values() for d in s.received]

    async def _push(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        with self.serving(request):
            return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        sub = self.subscriptions.get(request.match_info["id"])
        if sub is None:
            return web.json_response({"reason": "no such subscription"}, status=404)
        sub.requests += 1
        try:
            claims, key = self._check_vapid(request, sub)
            ttl, urgency, topic = self._check_headers(request, body)
            try:
                plaintext = decrypt(body, sub.key, sub.auth)
                payload = json.loads(plaintext)
            except ValueError as exc:
                raise Refused(400, f"cannot decrypt: {exc}") from None
            except Exception as exc:  # noqa: BLE001 -- InvalidTag and friends
                raise Refused(400, f"cannot decrypt: {type(exc).__name__}") from None
        except Refused as refused:
            self.errors.append(refused.reason)
            return web.json_response({"reason": refused.reason}, status=refused.status)
        reply = sub.replies.popleft() if sub.replies else Reply()
        if reply.garbage:
            return garbage(request, b"HTTP/1.1 2O1 Gr\x00eat\r\n\xff\xfe\r\n")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status not in (200, 201, 202):
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        message = uuid.uuid4().hex
        sub.received.append(Delivered(payload, ttl, urgency, topic, claims, key,
                                      request.headers["Authorization"], message))
        return web.Response(status=201, headers={"Location": f"https://127.0.0.1:{self.port}/m/{message}",
                                                 **reply.headers})

    def _check_vapid(self, request: web.Request, sub: BrowserSubscription) -> tuple[dict[str, Any], str]:
        header = request.headers.get("Authorization", "")
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            raise Refused(401, "missing vapid authorization")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t", ""), parts.get("k", "")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
            claims: dict[str, Any] = jwt.decode(
                token, public, algorithms=["ES256"], audience=self.origins,
                options={"require": ["aud", "exp", "sub"]})
        except (ValueError, jwt.PyJWTError) as exc:
            raise Refused(401, f"bad vapid token: {exc}") from None
        if claims["aud"] != f"https://{request.host}":
            raise Refused(401, f"aud {claims['aud']} is not this endpoint's origin")
        if claims["exp"] > time.time() + 24 * 3600:
            raise Refused(401, "exp is more than 24 hours ahead")
        if not re.match(r"^(mailto:|https://)\S+$", str(claims["sub"])):
            raise Refused(401, "sub must be a mailto: or https: URI")
        if sub.application_server_key is not None and unb64url(key) != sub.application_server_key:
            raise Refused(403, "the VAPID key is not the one this subscription was created with")
        return claims, key

    @staticmethod
    def _check_headers(request: web.Request, body: bytes) -> tuple[str, str | None, str | None]:
        ttl = request.headers.get("TTL")
        if ttl is None or not ttl.isdigit():
            raise Refused(400, "TTL header missing or not a number")
        urgency = request.headers.get("Urgency")
        if urgency is not None and urgency not in ("very-low", "low", "normal", "high"):
            raise Refused(400, f"bad Urgency {urgency!r}")
        topic = request.headers.get("Topic")
        if topic is not None and not TOPIC.fullmatch(topic):
            raise Refused(400, f"bad Topic {topic!r}")
        if request.headers.get("Content-Encoding") != "aes128gcm":
            raise Refused(400, "Content-Encoding must be aes128gcm")
        if len(body) > MAX_BODY:
            raise Refused(413, f"body of {len(body)} octets is over {MAX_BODY}")
        return ttl, urgency, topic
