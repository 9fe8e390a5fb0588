"""The `fcm` provider: Firebase Cloud Messaging's HTTP v1 API (`messages:send`), authorised with
an OAuth 2 token of the app's service account, over one keep-alive pool per credential.

FCM v1 takes one message per request, so a batch is sent as concurrent requests bounded by
`max_concurrency`; the hot path builds one dict and one orjson body per message and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from yarl import URL

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent, TargetInvalid
from .google_auth import FIREBASE_MESSAGING_SCOPE, ServiceAccountTokens, TokenError
from .http import LazySession, gather_bounded, retry_after
from .options import ProviderOptions
from .overrides import merge

log = logging.getLogger("tidings.provider.fcm")

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

# The token is gone or belongs to another sender: the device must be disabled.
TARGET_GONE = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
# Transient on FCM's side: try again later.
TRANSIENT = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED",
                       "DEADLINE_EXCEEDED", "ABORTED"})
# Our access token was refused (or, for THIRD_PARTY_AUTH_ERROR, the APNs/web push credential
# FCM holds for the project): a fresh token is fetched before the next attempt.
AUTH_ERRORS = frozenset({"UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"})

_PRIORITY: dict[str, tuple[str, str, str]] = {  # android priority, apns-priority, web push Urgency
    "high": ("high", "10", "high"),
    "normal": ("normal", "5", "normal"),
}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def build_message(m: OutboundMessage, now: int) -> dict[str, Any]:
    """The v1 `message` object for one delivery; `now` is the UNIX time APNs expiry counts from."""
    message: dict[str, Any] = {"token": m.target}
    if m.title is not None or m.body is not None:
        notification = {}
        if m.title is not None:
            notification["title"] = m.title
        if m.body is not None:
            notification["body"] = m.body
        message["notification"] = notification
    if m.data:
        message["data"] = {k: _string(v) for k, v in m.data.items()}
    android_priority, apns_priority, urgency = _PRIORITY.get(m.priority, _PRIORITY["normal"])
    android: dict[str, Any] = {"priority": android_priority}
    apns_headers = {"apns-priority": apns_priority}
    web_headers = {"Urgency": urgency}
    if m.ttl is not None:
        android["ttl"] = f"{m.ttl}s"
        # 0 tells APNs to try once and not store the notification.
        apns_headers["apns-expiration"] = str(now + m.ttl) if m.ttl > 0 else "0"
        web_headers["TTL"] = str(m.ttl)
    if m.collapse_key:
        android["collapse_key"] = m.collapse_key
        apns_headers["apns-collapse-id"] = m.collapse_key
        web_headers["Topic"] = m.collapse_key
    apns: dict[str, Any] = {"headers": apns_headers}
    webpush: dict[str, Any] = {"headers": web_headers}
    overrides = m.overrides
    if overrides:
        if isinstance(extra := overrides.get("android"), Mapping):
            android = merge(android, extra)
        if isinstance(extra := overrides.get("apns"), Mapping):
            apns = merge(apns, extra)
        if isinstance(extra := overrides.get("webpush"), Mapping):
            webpush = merge(webpush, extra)
    message["android"] = android
    message["apns"] = apns
    message["webpush"] = webpush
    return message


def _error_code(error: Mapping[str, Any]) -> tuple[str, bool]:
    """FCM's own error code when it gave one, else the canonical status; and whether the
    request's `message.token` field was named as the culprit."""
    code, token_field = "", False
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, Mapping):
            continue
        kind = detail.get("@type")
        if kind == FCM_ERROR_TYPE and not code:
            code = str(detail.get("errorCode") or "")
        elif kind == BAD_REQUEST_TYPE:
            violations = detail.get("fieldViolations")
            token_field = token_field or any(
                isinstance(v, Mapping) and v.get("field") == "message.token"
                for v in (violations if isinstance(violations, list) else ()))
    return code or str(error.get("status") or ""), token_field


class FcmProvider:
    name = "fcm"

    def __init__(self, config: dict[str, Any], options: ProviderOptions, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        credentials = config["credentials"]
        self.max_concurrency = options.max_concurrency
        self.project_id: str = credentials["project_id"]
        endpoint = (config.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
        self.url = URL(f"{endpoint}/v1/projects/{self.project_id}/messages:send")
        self.tokens = ServiceAccountTokens(credentials, FIREBASE_MESSAGING_SCOPE, clock=clock)
        self._session = LazySession(options)
        self._headers: dict[str, str] = {}
        self._headers_for: str | None = None

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        client = self._session.get()
        try:
            await self.tokens.token(client)
        except TokenError as exc:
            log.warning("fcm project %s: no access token for %d messages: %s", self.project_id,
                        len(messages), exc)
            return [Retry(f"access token: {exc}")] * len(messages)
        url, now = self.url, int(time.time())

        async def one(m: OutboundMessage) -> SendResult:
            body = orjson.dumps({"message": build_message(m, now)})
            # A token refused mid-batch (revoked, or expired early) is replaced once, at once:
            # the requests in flight share the refresh and go again instead of all backing off.
            retried = False
            while True:
                access_token = self.tokens.current
                if access_token is None:
                    try:
                        access_token = await self.tokens.token(client)
                    except TokenError as exc:
                        return Retry(f"access token: {exc}")
                async with client.post(url, data=body, headers=self._auth(access_token)) as resp:
                    raw = await resp.read()
                    status = resp.status
                    if status == 200:
                        try:
                            return Sent(orjson.loads(raw)["name"])
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            return Retry("FCM answered 200 without a message name")
                    if status == 401 and not retried:
                        self.tokens.invalidate(access_token)
                        retried = True
                        continue
                    return self._failure(status, raw, resp.headers.get("Retry-After"), access_token)

        return await gather_bounded(messages, self.max_concurrency, one)

    def _auth(self, access_token: str) -> dict[str, str]:
        """The request headers for `access_token`, built once per token."""
        if access_token is not self._headers_for:
            self._headers = {"Authorization": f"Bearer {access_token}",
                             "Content-Type": "application/json; charset=UTF-8"}
            self._headers_for = access_token
        return self._headers

    def _failure(self, status: int, raw: bytes, after_header: str | None,
                 access_token: str) -> SendResult:
        try:
            error = orjson.loads(raw)["error"]
            if not isinstance(error, dict):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if status == 401:
                self.tokens.invalidate(access_token)
            return Retry(f"FCM answered {status} without a JSON error", retry_after(after_header))
        code, token_field = _error_code(error)
        text = str(error.get("message") or "").strip()
        reason = (f"{code or status}: {text}" if text else (code or str(status)))[:300]
        if status == 401 or code in AUTH_ERRORS:
            self.tokens.invalidate(access_token)
            return Retry(reason)
        if code in TARGET_GONE:
            return TargetInvalid(reason)
        if code == "INVALID_ARGUMENT" and (token_field or "registration token" in text.lower()):
            return TargetInvalid(reason)
        if status == 429 or status >= 500 or code in TRANSIENT:
            return Retry(reason, retry_after(after_header))
        if status in (400, 413) or code == "INVALID_ARGUMENT":
            return Failed(reason)
        # Anything else (a project FCM does not know, a permission missing) is the setup's
        # fault, not the message's: keep it for a later attempt.
        return Retry(reason, retry_after(after_header))

    async def close(self) -> None:
        await self._session.close()
