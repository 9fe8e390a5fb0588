"""The `apns` provider: the Apple Push Notification service's HTTP/2 provider API, authorised
with a provider token (an ES256 JWT signed with the app's .p8 key).

APNs speaks HTTP/2 only and takes one notification per stream, so a batch goes out as
concurrent streams multiplexed on one connection (`h2client`), bounded by `max_concurrency`.
The provider token is made once and reused for 55 minutes: APNs refuses a token older than an
hour, and refuses a key whose token changes more than once in 20 minutes.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent, TargetInvalid
from .h2client import H2Client, H2Error, Header, NeverIndexedHeaderTuple, Response
from .http import gather_bounded, retry_after, transport_retry
from .options import ProviderOptions

log = logging.getLogger("tidings.provider.apns")

HOSTS = {"production": "https://api.push.apple.com",
         "sandbox": "https://api.sandbox.push.apple.com"}
TOKEN_LIFETIME = 55 * 60.0  # seconds a provider token is reused
MAX_PAYLOAD = 4096  # bytes of JSON; VoIP pushes may take 5120
MAX_VOIP_PAYLOAD = 5120
MAX_COLLAPSE_ID = 64  # bytes

# 400 reasons that say the token itself is no good for this app: the device is disabled.
TOKEN_REFUSED = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_HEADER_NAME = re.compile(r"apns-[a-z0-9-]+")
_ALERT = (b"apns-push-type", b"alert")
_BACKGROUND = (b"apns-push-type", b"background")
_HIGH = (b"apns-priority", b"10")
_NORMAL = (b"apns-priority", b"5")
_SIGNING_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, jwt.PyJWTError)


@dataclass(frozen=True, slots=True)
class ProviderToken:
    authorization: Header  # (b"authorization", b"bearer <jwt>")
    issued_at: float


class _Refused(Exception):
    """The message cannot be sent as it is; it never reaches APNs."""


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, nested objects merged key by key, None deleting a key;
    neither is modified."""
    out = dict(base)
    for key, value in extra.items():
        current = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge(current, value)
        else:
            out[key] = value
    return out


def _reason(body: bytes) -> str | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return reason[:200] if isinstance(reason, str) and reason else None


class ApnsProvider:
    name = "apns"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self._team_id = str(config["team_id"])
        self._key_id = str(config["key_id"])
        self._pem = str(config["private_key"])
        self._topic: Header = (b"apns-topic", str(config["topic"]).encode())
        endpoint = config.get("endpoint") or HOSTS[config.get("environment") or "production"]
        parts = urlsplit(endpoint)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = (parts.path.rstrip("/") + "/3/device/").encode()
        self._options = options
        self.max_concurrency = max(1, options.max_concurrency)
        self._client: H2Client | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._token: ProviderToken | None = None
        self.clock: Callable[[], float] = time.time  # wall clock: a token's iat, apns-expiration

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        try:
            self.provider_token()
        except _SIGNING_ERRORS as exc:
            log.warning("apns: cannot sign a provider token with key %s: %s", self._key_id, exc)
            return [Failed(f"APNs signing key unusable: {exc}")] * len(messages)
        if self._client is None:
            self._client = H2Client(self._origin, ssl_context=self._options.ssl_context,
                                    timeout=self._options.timeout)
        return await gather_bounded(messages, self.max_concurrency, self._send_one)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- the provider token -------------------------------------------------------------------

    def provider_token(self) -> ProviderToken:
        """The current token, made anew once it is 55 minutes old (or after APNs said it
        expired)."""
        token = self._token
        now = self.clock()
        if token is None or not (-300.0 <= now - token.issued_at < TOKEN_LIFETIME):
            token = self._token = self._mint(now)
        return token

    def _mint(self, now: float) -> ProviderToken:
        if self._key is None:
            key = load_pem_private_key(self._pem.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("not an EC P-256 (.p8) key")
            self._key = key
        value = jwt.encode({"iss": self._team_id, "iat": int(now)}, self._key, algorithm="ES256",
                           headers={"kid": self._key_id, "typ": None})
        return ProviderToken((b"authorization", b"bearer " + value.encode()), now)

    def _renew(self, refused: ProviderToken) -> None:
        # Every stream in flight with the old token is refused at once: renew only once.
        if self._token is refused:
            self._token = None

    # -- one notification ---------------------------------------------------------------------

    async def _send_one(self, m: OutboundMessage) -> SendResult:
        device = m.target
        if not _HEX.fullmatch(device):
            return TargetInvalid("BadDeviceToken: not a hexadecimal device token")
        try:
            headers, body, apns_id = self._request(m)
        except _Refused as exc:
            return Failed(str(exc))
        token = self.provider_token()
        headers.append(token.authorization)
        client = self._client
        assert client is not None
        try:
            response = await client.request(b"POST", self._path + device.encode(), headers, body,
                                            index_path=False)
        except H2Error as exc:
            return transport_retry(exc)
        return self._result(response, apns_id, token)

    def _request(self, m: OutboundMessage) -> tuple[list[Header], bytes, str]:
        """The headers (without authorization), the JSON payload and the apns-id."""
        aps: dict[str, Any] = {}
        if m.title or m.body:
            alert = {}
            if m.title:
                alert["title"] = m.title
            if m.body:
                alert["body"] = m.body
            aps["alert"] = alert
        else:
            aps["content-available"] = 1
        payload: dict[str, Any] = {"aps": aps}
        for key, value in m.data.items():
            if key != "aps":  # custom data sits beside `aps`, never in it (overrides may)
                payload[key] = value
        overrides = m.overrides.get("apns") if m.overrides else None
        extra: Mapping[str, Any] | None = None
        if overrides:
            if not isinstance(overrides, Mapping):
                raise _Refused("overrides.apns must be an object")
            if overrides.get("payload"):
                if not isinstance(overrides["payload"], Mapping):
                    raise _Refused("overrides.apns.payload must be an object")
                payload = merge(payload, overrides["payload"])
                merged = payload.get("aps")
                if not isinstance(merged, dict):
                    raise _Refused("overrides.apns.payload.aps must be an object")
                aps = merged
            extra = overrides.get("headers") or None
        try:
            body = orjson.dumps(payload)
        except TypeError as exc:
            raise _Refused(f"the payload is not JSON: {exc}") from None
        # An alert, a sound or a badge is a visible notification; anything else wakes the app.
        visible = "alert" in aps or "sound" in aps or "badge" in aps
        apns_id = str(uuid.uuid4())
        headers: list[Header] = [
            self._topic, _ALERT if visible else _BACKGROUND,
            _HIGH if visible and m.priority == "high" else _NORMAL,
            # Different on every request: kept out of the HPACK table, which then keeps the
            # provider token and the topic.
            NeverIndexedHeaderTuple(b"apns-id", apns_id.encode()),
        ]
        if m.ttl is not None:
            expiration = 0 if m.ttl <= 0 else int(self.clock()) + m.ttl
            headers.append(NeverIndexedHeaderTuple(b"apns-expiration", str(expiration).encode()))
        if m.collapse_key:
            headers.append(NeverIndexedHeaderTuple(b"apns-collapse-id", m.collapse_key.encode()))
        limit = MAX_PAYLOAD
        if extra:
            headers, apns_id = self._override_headers(headers, extra, apns_id)
            if any(k == b"apns-push-type" and v == b"voip" for k, v in headers):
                limit = MAX_VOIP_PAYLOAD
        if (m.collapse_key or extra) and any(
                k == b"apns-collapse-id" and len(v) > MAX_COLLAPSE_ID for k, v in headers):
            raise _Refused(f"collapse key longer than {MAX_COLLAPSE_ID} bytes")
        if len(body) > limit:
            raise _Refused(f"payload too large: {len(body)} bytes, APNs takes at most {limit}")
        return headers, body, apns_id

    def _override_headers(self, headers: list[Header], extra: Mapping[str, Any],
                          apns_id: str) -> tuple[list[Header], str]:
        if not isinstance(extra, Mapping):
            raise _Refused("overrides.apns.headers must be an object")
        merged: dict[bytes, Header] = {name: (name, value) for name, value in headers}
        names = set()
        for raw_name, raw_value in extra.items():
            name = str(raw_name).lower()
            value = str(raw_value)
            if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
                raise _Refused(f"overrides.apns.headers: {raw_name!r} is not an APNs header")
            names.add(name)
            merged[name.encode()] = (name.encode(), value.encode())
            if name == "apns-id":
                apns_id = value
        if "apns-priority" not in names and merged[b"apns-push-type"] == _BACKGROUND:
            merged[b"apns-priority"] = _NORMAL  # a background push must go at priority 5
        out = [NeverIndexedHeaderTuple(*h) if h[0] in (b"apns-id", b"apns-expiration",
                                                        b"apns-collapse-id") else h
               for h in merged.values()]
        return out, apns_id

    def _result(self, response: Response, apns_id: str, token: ProviderToken) -> SendResult:
        status = response.status
        if status == 200:
            answered = response.header(b"apns-id")
            return Sent(answered.decode("ascii", "replace") if answered else apns_id)
        reason = _reason(response.body)
        header = response.header(b"retry-after")
        after = retry_after(header.decode("latin-1")) if header else None
        if reason is None:
            return Retry(f"APNs answered HTTP {status} without a readable reason", after=after)
        if status == 410 or (status == 400 and reason in TOKEN_REFUSED):
            return TargetInvalid(reason)
        if status == 403 and reason == "ExpiredProviderToken":
            self._renew(token)
            return Retry(f"{reason} (HTTP 403): provider token renewed")
        if status == 429 or status >= 500:
            return Retry(f"{reason} (HTTP {status})", after=after)
        if 400 <= status < 500:
            return Failed(f"{reason} (HTTP {status})")
        return Retry(f"unexpected HTTP {status} ({reason})", after=after)
