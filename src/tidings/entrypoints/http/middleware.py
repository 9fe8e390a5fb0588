"""Pure ASGI middleware: the body size limit and request metrics, cheap on every request."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem


def _is_json(content_type: bytes) -> bool:
    main = content_type.split(b";", 1)[0].strip().lower()
    return main == b"application/json" or (main.startswith(b"application/")
                                           and main.endswith(b"+json"))


# Providers post their receipts in their own formats (form-encoded, SNS's text/plain JSON).
CALLBACKS = "/v1/callbacks/"


class RequestGuard:
    """Refuses bodies over the size limit (413) and bodies that are not JSON (415)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = 0
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
            elif name == b"content-type":
                content_type = value
        if length > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b""):
            response = problem(400, "bad-request", "NUL characters are not allowed in the URL")
            await response(scope, receive, send)
            return
        if (length and content_type and not _is_json(content_type)
                and not scope["path"].startswith(CALLBACKS)):
            response = problem(415, "unsupported-media-type",
                               "send JSON with `Content-Type: application/json`")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"the body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "payload-too-large",
                           f"the body is larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


class Metrics:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("tidings_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("tidings_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["route"], registry=registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "unmatched")
            self.requests.labels(scope["method"], name, str(status)).inc()
            self.latency.labels(name).observe(time.perf_counter() - start)
