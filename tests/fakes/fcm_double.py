"""A loopback stand-in for Google's OAuth 2 token endpoint and FCM's HTTP v1 `messages:send`.

It checks what the real services check: the JWT-bearer assertion's RS256 signature against the
service account's public key, its issuer, audience, scope and lifetime; the bearer token it
issued on every send; the project in the path; the message's shape (exactly one target, string
data values, well-formed android/apns/webpush blocks). A malformed request gets the answer FCM
would give (400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED), so an adapter that
sends the wrong thing fails its tests. Each device token can be scripted to answer an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.loopback import AiohttpDouble, take, truncated

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPES = {"https://www.googleapis.com/auth/firebase.messaging",
              "https://www.googleapis.com/auth/cloud-platform"}
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options",
                  "fcmOptions", "token", "topic", "condition"}
NOTIFICATION_FIELDS = {"title", "body", "image"}
ANDROID_FIELDS = {"collapse_key", "collapseKey", "priority", "ttl", "restricted_package_name",
                  "restrictedPackageName", "data", "notification", "fcm_options", "fcmOptions",
                  "direct_boot_ok", "directBootOk"}
APNS_FIELDS = {"headers", "payload", "fcm_options", "fcmOptions", "live_activity_token"}
WEBPUSH_FIELDS = {"headers", "data", "notification", "fcm_options", "fcmOptions"}
TTL = re.compile(r"^\d+(\.\d{1,9})?s$")

KINDS = ("unregistered", "invalid_token", "invalid_argument", "sender_id_mismatch", "quota",
         "unavailable", "internal", "garbage", "truncated", "slow", "unauthenticated", "third_party_auth")


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_service_account(token_uri: str, project_id: str = "tidings-test",
                         key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
    """A throwaway service-account JSON (as the Google console hands it out) whose token
    endpoint is `token_uri`."""
    key = key or generate_private_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"firebase-adminsdk-{secrets.token_hex(3)}@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account", "project_id": project_id,
        "private_key_id": secrets.token_hex(20), "private_key": pem, "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
    }


@dataclass
class Account:
    public_key: Any
    project_id: str
    key_id: str | None


@dataclass
class Issued:
    client_email: str
    project_id: str
    scopes: set[str]
    expires_at: float


@dataclass
class Script:
    kind: str
    times: int | None  # None: every time
    retry_after: str | None = None
    status: int | None = None


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return str(self.body.get("error", {}).get("message", ""))


def fcm_error(status: int, canonical: str, message: str, error_code: str | None = None,
              field_violation: str | None = None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": FCM_ERROR, "errorCode": error_code})
    if field_violation:
        details.append({"@type": BAD_REQUEST, "fieldViolations": [
            {"field": field_violation, "description": message}]})
    error: dict[str, Any] = {"code": status, "message": message, "status": canonical}
    if details:
        error["details"] = details
    return {"error": error}


def _bad(message: str, where: str | None = None) -> Answer:
    return Answer(400, fcm_error(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT", where))


class FcmDouble(AiohttpDouble):
    """`async with FcmDouble() as fcm:` then `fcm.service_account()` for credentials that
    point at it; `fcm.fail(token, "unregistered")` scripts a device's answer."""

    def __init__(self, *, expires_in: int = 3600) -> None:
        super().__init__()
        self.expires_in = expires_in
        self.accounts: dict[str, Account] = {}
        self.issued: dict[str, Issued] = {}
        self.scripts: dict[str, list[Script]] = {}
        self.received: list[dict[str, Any]] = []  # every message accepted, as sent
        self.rejected: list[str] = []  # why requests were refused (malformed or unauthorised)
        self.send_requests = 0
        self.token_requests = 0
        # "error" (400 invalid_grant), "unavailable" (503), "garbage", "slow", or None.
        self.token_failure: str | None = None
        self.delay = 0.0  # every send waits this long first, so concurrency can be seen
        self.token_delay = 0.0  # the token endpoint waits this long before it answers
        self.slow_seconds = 5.0
        self._ids = itertools.count(1)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._release = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        return app

    async def close(self) -> None:
        self._release.set()
        await super().close()

    # -- set-up -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account(self, project_id: str = "tidings-test") -> dict[str, Any]:
        """A new service account of `project_id`, known to this double."""
        key = generate_private_key()
        account = make_service_account(self.token_uri, project_id, key)
        self.register(account, key.public_key())
        return account

    def register(self, account: dict[str, Any], public_key: Any) -> None:
        self.accounts[account["client_email"]] = Account(public_key, account["project_id"],
                                                         account.get("private_key_id"))

    def fail(self, token: str, kind: str, *, times: int | None = None,
             retry_after: str | None = None, status: int | None = None) -> None:
        """Answer sends to `token` with the error `kind` (one of KINDS), `times` times or for
        ever; `status` changes the HTTP status of a garbage answer."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.scripts.setdefault(token, []).append(Script(kind, times, retry_after, status))

    def revoke_tokens(self) -> None:
        """Forget every access token issued, as when Google revokes them."""
        self.issued.clear()

    async def wait_received(self, count: int) -> None:
        """Until `count` messages have been accepted (at most a few seconds)."""
        if len(self.received) < count:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((count, waiter))
            await asyncio.wait_for(waiter, 5.0)

    def to(self, token: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("token") == token]

    # -- the token endpoint -------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.token_requests += 1
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.token_failure == "slow":
            await self._wait(self.slow_seconds)
        if self.token_failure == "unavailable":
            return web.json_response({"error": "internal_failure"}, status=503)
        if self.token_failure == "garbage":
            return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._grant_error("invalid_request", "Bad Request", status=400)
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return self._grant_error("unsupported_grant_type",
                                     f"Invalid grant_type: {form.get('grant_type')!s:.100}")
        if self.token_failure == "error":
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return self._grant_error("invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self._grant_error("invalid_grant", "Invalid JWT: Token must be a short-lived token")
        account = self.accounts.get(str(unverified.get("iss")))
        if account is None:
            return self._grant_error("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or (header.get("kid") and header["kid"] != account.key_id):
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(assertion, account.public_key, algorithms=["RS256"],
                                audience=self.token_uri, issuer=unverified["iss"],
                                options={"require": ["iss", "aud", "iat", "exp"]}, leeway=5)
        except jwt.InvalidSignatureError:
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return self._grant_error("invalid_grant", f"Invalid JWT: {exc}")
        now = time.time()
        if not (claims["iat"] <= now + 5 and 0 < claims["exp"] - claims["iat"] <= 3600):
            return self._grant_error("invalid_grant", "Invalid JWT: Token must be a short-lived "
                                     "token (60 minutes) and in a reasonable timeframe.")
        scopes = set(str(claims.get("scope") or "").split())
        if not scopes:
            return self._grant_error("invalid_scope", "Empty or missing scope not allowed.")
        token = "ya29." + secrets.token_urlsafe(32)
        self.issued[token] = Issued(claims["iss"], account.project_id, scopes,
                                    now + self.expires_in)
        return web.json_response({"access_token": token, "expires_in": self.expires_in,
                                  "token_type": "Bearer"})

    @staticmethod
    def _grant_error(error: str, description: str, status: int = 400) -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    # -- messages:send ------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.StreamResponse:
        self.send_requests += 1
        with self.serving(request):
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        project = request.match_info["project"]
        bearer = request.headers.get("Authorization", "")
        issued = self.issued.get(bearer[7:]) if bearer.startswith("Bearer ") else None
        if issued is None or issued.expires_at < time.time():
            self.rejected.append("unauthenticated")
            return self._json(Answer(401, fcm_error(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
                "OAuth 2 access token, login cookie or other valid authentication credential.")))
        if not issued.scopes & FCM_SCOPES:
            self.rejected.append("scope")
            return self._json(Answer(403, fcm_error(
                403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.")))
        if issued.project_id != project:
            self.rejected.append("project")
            return self._json(Answer(403, fcm_error(
                403, "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager"
                f".googleapis.com/projects/{project}' (or it may not exist).")))
        if request.content_type != "application/json":
            self.rejected.append("content type")
            return self._json(_bad("Invalid JSON payload received. Unexpected content type."))
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            self.rejected.append("json")
            return self._json(_bad("Invalid JSON payload received."))
        problem = self._check(body)
        if problem is not None:
            self.rejected.append(problem.reason)
            return self._json(problem)
        message = body["message"]
        token = message.get("token")
        script = take(self.scripts.get(token)) if token else None
        if script is not None:
            answer = await self._scripted(request, script, bearer[7:])
            if answer is not None:
                return answer
        self.received.append(message)
        for count, waiter in self._waiters:
            if len(self.received) >= count and not waiter.done():
                waiter.set_result(None)
        name = f"projects/{project}/messages/0:{next(self._ids)}%{secrets.token_hex(8)}"
        return self._json(Answer(200, {"name": name}))

    async def _scripted(self, request: web.Request, script: Script,
                        access_token: str) -> web.StreamResponse | None:
        after = {"Retry-After": script.retry_after} if script.retry_after else {}
        match script.kind:
            case "unregistered":
                return self._json(Answer(404, fcm_error(404, "NOT_FOUND", "Requested entity was not found.",
                                                        "UNREGISTERED")))
            case "invalid_token":
                return self._json(Answer(400, fcm_error(
                    400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT")))
            case "invalid_argument":
                return self._json(Answer(400, fcm_error(
                    400, "INVALID_ARGUMENT", "Invalid value at 'message.android.notification.color' "
                    "(TYPE_STRING), not a color", None, "message.android.notification.color")))
            case "sender_id_mismatch":
                return self._json(Answer(403, fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch",
                                                        "SENDER_ID_MISMATCH")))
            case "quota":
                return self._json(Answer(429, fcm_error(
                    429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'.",
                    "QUOTA_EXCEEDED"), after))
            case "unavailable":
                return self._json(Answer(503, fcm_error(503, "UNAVAILABLE", "The service is currently "
                                                        "unavailable.", "UNAVAILABLE"), after))
            case "internal":
                return self._json(Answer(500, fcm_error(500, "INTERNAL", "Internal error encountered.",
                                                        "INTERNAL"), after))
            case "garbage":
                return web.Response(status=script.status or 502, text="<html><body>Bad Gateway</body></html>",
                                    content_type="text/html")
            case "truncated":
                return await truncated(request, "application/json", b'{"name": "projects/')
            case "slow":
                await self._wait(self.slow_seconds)
                return None
            case "unauthenticated":
                self.issued.pop(access_token, None)
                return self._json(Answer(401, fcm_error(
                    401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")))
            case "third_party_auth":  # the project's APNs certificate or web push key was refused
                return self._json(Answer(401, fcm_error(
                    401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service",
                    "THIRD_PARTY_AUTH_ERROR")))
        raise AssertionError(script.kind)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    @staticmethod
    def _json(answer: Answer) -> web.Response:
        return web.Response(status=answer.status, body=orjson.dumps(answer.body), headers=answer.headers,
                            content_type="application/json", charset="UTF-8")

    # -- what FCM validates -------------------------------------------------------------------

    @staticmethod
    def _check(body: Any) -> Answer | None:
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            return _bad("Request contains an invalid argument: message is required.", "message")
        extra = set(body) - {"message", "validate_only", "validateOnly"}
        if extra:
            return _bad(f'Invalid JSON payload received. Unknown name "{sorted(extra)[0]}": '
                        "Cannot find field.")
        message = body["message"]
        unknown = set(message) - MESSAGE_FIELDS
        if unknown:
            return _bad(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
                        "'message': Cannot find field.")
        targets = [k for k in ("token", "topic", "condition") if message.get(k)]
        if len(targets) != 1:
            return _bad("Request contains an invalid argument: exactly one of token, topic or "
                        "condition is required.", "message")
        if not isinstance(message[targets[0]], str):
            return _bad(f"Invalid value at 'message.{targets[0]}' (TYPE_STRING)", f"message.{targets[0]}")
        problem = (_string_map(message.get("data"), "message.data")
                   or _fields(message.get("notification"), NOTIFICATION_FIELDS, "message.notification"))
        if problem:
            return problem
        notification = message.get("notification") or {}
        for key, value in notification.items():
            if not isinstance(value, str):
                return _bad(f"Invalid value at 'message.notification.{key}' (TYPE_STRING)",
                            f"message.notification.{key}")
        return _android(message.get("android")) or _apns(message.get("apns")) or _webpush(
            message.get("webpush"))


def _fields(value: Any, allowed: set[str], where: str) -> Answer | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return _bad(f"Invalid value at '{where}': not an object", where)
    unknown = set(value) - allowed
    if unknown:
        return _bad(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
                    f"'{where}': Cannot find field.")
    return None


def _string_map(value: Any, where: str) -> Answer | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return _bad(f"Invalid value at '{where}': not a map", where)
    for index, (key, item) in enumerate(value.items()):
        if not isinstance(key, str) or not isinstance(item, str):
            return _bad(f"Invalid value at '{where}[{index}].value' (TYPE_STRING), "
                        f"{orjson.dumps(item).decode()}", f"{where}[{index}].value")
    return None


def _android(android: Any) -> Answer | None:
    problem = _fields(android, ANDROID_FIELDS, "message.android")
    if problem or android is None:
        return problem
    ttl = android.get("ttl")
    if ttl is not None and not (isinstance(ttl, str) and TTL.match(ttl)):
        return _bad(f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf."
                    f"Duration), Field 'ttl', Illegal duration format; {ttl!r}", "message.android.ttl")
    priority = android.get("priority")
    if priority is not None and str(priority).upper() not in ("NORMAL", "HIGH"):
        return _bad(f"Invalid value at 'message.android.priority' "
                    f"(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {priority!r}",
                    "message.android.priority")
    collapse = android.get("collapse_key", android.get("collapseKey"))
    if collapse is not None and not isinstance(collapse, str):
        return _bad("Invalid value at 'message.android.collapse_key' (TYPE_STRING)",
                    "message.android.collapse_key")
    return _string_map(android.get("data"), "message.android.data")


def _apns(apns: Any) -> Answer | None:
    problem = _fields(apns, APNS_FIELDS, "message.apns")
    if problem or apns is None:
        return problem
    problem = _string_map(apns.get("headers"), "message.apns.headers")
    if problem:
        return problem
    headers = apns.get("headers") or {}
    if "apns-priority" in headers and headers["apns-priority"] not in ("5", "10", "1"):
        return _bad("Invalid APNs priority", "message.apns.headers")
    if "apns-expiration" in headers and not headers["apns-expiration"].isdigit():
        return _bad("Invalid APNs expiration", "message.apns.headers")
    payload = apns.get("payload")
    if payload is not None and not isinstance(payload, dict):
        return _bad("Invalid value at 'message.apns.payload' (type.googleapis.com/google.protobuf.Struct)",
                    "message.apns.payload")
    return None


def _webpush(webpush: Any) -> Answer | None:
    problem = _fields(webpush, WEBPUSH_FIELDS, "message.webpush")
    if problem or webpush is None:
        return problem
    problem = (_string_map(webpush.get("headers"), "message.webpush.headers")
               or _string_map(webpush.get("data"), "message.webpush.data"))
    if problem:
        return problem
    headers = webpush.get("headers") or {}
    if "TTL" in headers and not headers["TTL"].isdigit():
        return _bad("Invalid WebPush TTL header", "message.webpush.headers")
    if "Urgency" in headers and headers["Urgency"] not in ("very-low", "low", "normal", "high"):
        return _bad("Invalid WebPush Urgency header", "message.webpush.headers")
    return None
