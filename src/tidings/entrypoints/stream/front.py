"""The server's way in: WebSocket streams go straight to their endpoint, everything else to the
FastAPI app.

A WebSocket is served for hours by the coroutines it passed through on the way in, so each
middleware and routing layer stays on every connection's stack for as long as it is open:
measured at about 6 KiB per connection for the application's stack here, a third of all a
stream costs. Streams need none of those layers (they authenticate, limit and answer
themselves), so they skip them.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .ws import stream

STREAM_PATH = re.compile(r"/v1/users/([^/]+)/stream")


class Front:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match = STREAM_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self.app
                scope["path_params"] = {"user_id": match[1]}
                await stream(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)
