"""A loopback webhook receiver that checks what a Standard Webhooks consumer checks.

Every request must be a POST of JSON carrying `webhook-id`, `webhook-timestamp` (within five
minutes of now) and a `v1` HMAC-SHA256 signature over `{id}.{timestamp}.{body}` made with the
receiver's secret; the body must be the `{"type", "timestamp", "data"}` envelope. The check is
written here from the spec rather than borrowed from the service's own code, so a sender that
signs wrongly fails against it. A request that fails the check is answered 401 and kept in
`rejected`; a good one is kept in `received` and answered as scripted per path (200 unless told
otherwise: 204, 410, 500, 429 with Retry-After, a redirect, a slow answer, garbage).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.loopback import AiohttpDouble, garbage, take, truncated
from tidings.domain.webhooks import new_secret

TOLERANCE = 300
KINDS = ("ok", "no_content", "gone", "error", "unavailable", "rate_limited", "bad_request",
         "conflict", "redirect", "slow", "garbage", "truncated", "status")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any]

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Script:
    kind: str
    times: int | None  # None: every time
    status: int | None = None
    retry_after: str | None = None
    location: str = "https://elsewhere.example/hook"


@dataclass
class Rejected:
    path: str
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


def check_signature(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """Why this request is not authentic, or None: the consumer's side of the spec."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return "missing webhook headers"
    if not stamp.isdigit():
        return "bad webhook-timestamp"
    if abs(now - int(stamp)) > TOLERANCE:
        return "webhook-timestamp outside the tolerance"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, msg_id.encode() + b"." + stamp.encode() + b"." + body, hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    for signature in signatures.split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no valid v1 signature"


class WebhookReceiver(AiohttpDouble):
    """`async with WebhookReceiver() as hook:` then POST to `hook.url("/path")`, signed with
    `hook.secret`; `hook.answer("/path", "gone")` scripts that path's answers."""

    def __init__(self, secret: str | None = None, *, slow_seconds: float = 30.0) -> None:
        super().__init__()
        self.secret = secret or new_secret()
        self.slow_seconds = slow_seconds
        self.received: list[Received] = []
        self.rejected: list[Rejected] = []
        self.scripts: dict[str, list[Script]] = {}
        self._release = asyncio.Event()

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def close(self) -> None:
        self._release.set()
        await super().close()

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def answer(self, path: str, kind: str, *, times: int | None = None, status: int | None = None,
               retry_after: str | None = None, location: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown answer {kind!r}; known: {', '.join(KINDS)}")
        script = Script(kind, times, status, retry_after)
        if location:
            script.location = location
        self.scripts.setdefault(path, []).append(script)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self.serving(request):
            return await self._check(request)

    async def _check(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.read()

        def reject(reason: str, status: int = 401) -> web.Response:
            self.rejected.append(Rejected(request.path, reason, headers))
            return web.json_response({"error": reason}, status=status)

        if request.method != "POST":
            return reject("only POST", 405)
        if request.content_type != "application/json":
            return reject(f"content type {request.content_type}", 415)
        problem = check_signature(self.secret, headers, body, time.time())
        if problem:
            return reject(problem)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return reject("body is not JSON", 400)
        if (not isinstance(doc, dict) or not isinstance(doc.get("type"), str)
                or not isinstance(doc.get("timestamp"), str) or not isinstance(doc.get("data"), dict)):
            return reject("body is not a {type, timestamp, data} envelope", 400)
        self.received.append(Received(request.path, headers, body, doc))
        script = take(self.scripts.get(request.path))
        return await self._scripted(request, script) if script else web.Response(status=200, text="ok")

    async def _scripted(self, request: web.Request, script: Script) -> web.StreamResponse:
        after = {"Retry-After": script.retry_after} if script.retry_after else {}
        match script.kind:
            case "ok":
                return web.Response(status=200, text="ok")
            case "no_content":
                return web.Response(status=204)
            case "gone":
                return web.Response(status=410, text="this endpoint is gone")
            case "error":
                return web.Response(status=500, text="internal error", headers=after)
            case "unavailable":
                return web.Response(status=503, text="unavailable", headers=after)
            case "rate_limited":
                return web.Response(status=429, text="slow down", headers=after)
            case "bad_request":
                return web.Response(status=400, text="unexpected payload")
            case "conflict":
                return web.Response(status=409, text="busy with this id")
            case "redirect":
                return web.Response(status=script.status or 301, headers={"Location": script.location})
            case "status":
                return web.Response(status=script.status or 418, text="scripted", headers=after)
            case "slow":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), self.slow_seconds)
                return web.Response(status=200, text="late")
            case "garbage":
                return garbage(request, b"\x00\x01garbage that is not HTTP\r\n\r\n", status=200)
            case "truncated":
                return await truncated(request, "text/plain", b"cut sho")
        raise AssertionError(script.kind)
