"""`tidings.entrypoints.aws_lambda.http.handler`: the HTTP API (payload format 2.0, route
`$default`) through Mangum to the same FastAPI app as `tidings serve`, less its streams (an HTTP
API cannot hold a response open; streams go through the WebSocket API and its function).

The module imports only Mangum and the event checks: the settings, the container and the app
(FastAPI, pydantic, the routes) are built at the first request, once per process, so that the
import Lambda times as the function's initialisation stays small. The app's lifespan is off:
what it would start (the stream registry, the in-process workers) has no place in a function,
and the one thing the service needs before the first request (the store checked, the admin key
in place) is done here, once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mangum import Mangum

from . import events, runtime

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .runtime import Runtime

# Bodies returned as text; anything else goes back base64-encoded (Mangum's rule). Problem
# documents are `application/problem+json`, which Mangum's own list would encode.
TEXT_TYPES = ["text/", "application/json", "+json", "application/javascript", "application/xml"]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    with rt.invocation("http", context):
        try:
            events.checked(events.http_request, event)
        except events.BadEvent as exc:
            return problem(400, f"not a request of {exc.source}: {exc.problem}")
        adapter = rt.run(_adapter(rt))
        return adapter(event, context)  # runs the app on the runtime's loop


async def _adapter(rt: Runtime) -> Mangum:
    adapter: Mangum | None = rt.cache.get("http")
    if adapter is None:
        container = await rt.container(prepare=True)
        from ..http.app import create_app

        adapter = Mangum(RawPath(create_app(container, streams=False)), lifespan="off",
                         text_mime_types=TEXT_TYPES)
        rt.cache["http"] = adapter
    return adapter


class RawPath:
    """Gives the ASGI scope the path as the client sent it (`rawPath`, still percent-encoded),
    which Mangum leaves out (None): the app's guards read it, and refuse an encoded NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path") is None:
            raw = (scope.get("aws.event") or {}).get("rawPath") or scope["path"]
            scope = {**scope, "raw_path": raw.encode("utf-8", "surrogateescape")}
        await self.app(scope, receive, send)


def problem(status: int, detail: str) -> dict[str, Any]:
    """A problem document as an HTTP API response, for what never reaches the app."""
    body = {"type": "urn:tidings:problem:bad-request", "title": "Bad request", "status": status,
            "detail": detail}
    return {"statusCode": status, "headers": {"content-type": "application/problem+json"},
            "body": json.dumps(body), "isBase64Encoded": False}
