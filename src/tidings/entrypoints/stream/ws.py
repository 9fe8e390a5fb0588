"""`GET /v1/users/{user_id}/stream`: a user's events over a WebSocket.

One task writes (the one the server runs this endpoint in) and one reads the client's frames;
everything else a stream needs is in its `Listener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ...domain.errors import TidingsError
from ...domain.stream import (
    CLIENT_GONE,
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_GONE,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNSUPPORTED,
)
from ..http import errors
from .access import authorize
from .frames import PONG
from .listener import Listener
from .registry import StreamRegistry
from .wsprotocol import SEND_NOW

log = logging.getLogger("tidings.stream")

CLOSE_WAIT_SECONDS = 5.0
_CLOSE_OF = {401: CLOSE_UNAUTHENTICATED, 403: CLOSE_FORBIDDEN, 404: CLOSE_GONE,
             429: CLOSE_TRY_LATER, 503: CLOSE_TRY_LATER}


async def _refuse(ws: WebSocket, exc: TidingsError, header_auth: bool) -> None:
    """A client that set the Authorization header can read an HTTP answer, so it gets the
    problem document before the upgrade; a browser (token in the URL) sees only close codes,
    so it gets the upgrade and at once a close code that says why (4401, …)."""
    response = errors.from_error(exc)
    if header_auth and "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
        return
    code = _CLOSE_OF.get(response.status_code, CLOSE_POLICY)
    await ws.accept()
    # A close reason is at most 123 bytes of UTF-8 (the detail may name a long user id).
    await ws.close(code, exc.detail.encode()[:123].decode("utf-8", "ignore"))


async def _read(ws: WebSocket, listener: Listener, max_bytes: int) -> None:
    """The client's frames: `{"type": "ping"}` is answered; anything else closes the stream."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            listener.close(CLIENT_GONE, "the client closed the connection")
            return
        text = message.get("text")
        if text is None:
            listener.close(CLOSE_UNSUPPORTED, "send text frames of JSON")
            return
        if len(text) > max_bytes:
            listener.close(CLOSE_TOO_BIG, f"frames from clients are at most {max_bytes} bytes")
            return
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            listener.close(CLOSE_UNSUPPORTED, "a frame is not JSON")
            return
        if isinstance(doc, dict) and doc.get("type") == "ping":
            listener.push((None, PONG))
        else:
            listener.close(CLOSE_UNSUPPORTED, 'a client sends only {"type": "ping"}')
            return


async def stream(ws: WebSocket) -> None:
    container = ws.app.state.container
    registry: StreamRegistry = ws.app.state.streams
    header_auth = "authorization" in ws.headers
    settings = container.settings
    try:
        access = await authorize(container, ws.app.state.rate_limiter,
                                 ws.path_params["user_id"], ws.headers, ws.query_params)
        listener, opened = await registry.open(container.streams, access,
                                               settings.stream_buffer_events)
    except TidingsError as exc:
        await _refuse(ws, exc, header_auth)
        return
    reader: asyncio.Task[None] | None = None
    task = asyncio.current_task()
    try:
        await ws.accept()
        reader = asyncio.create_task(_read(ws, listener, settings.stream_max_frame_bytes))
        listener.direct = ws.scope.get("extensions", {}).get(SEND_NOW, {}).get("send")
        send = ws.send
        batch: list[tuple[str | None, str]] | None = listener.opening(opened)
        opened = opened.held()  # the replay is sent: do not keep it for the connection's life
        while batch is not None:
            listener.sending = True
            for _, text in batch:
                await send({"type": "websocket.send", "text": text})
            listener.sending = False
            batch = None
            batch = await listener.next()
        code, reason = listener.closing or (CLOSE_GOING_AWAY, "")
        if code != CLIENT_GONE:
            await ws.close(code, reason)
    except asyncio.CancelledError:
        # Cancelled by the listener because the client stopped reading; anything else (the
        # server stopping) goes on up.
        closing = listener.closing
        if (not listener.cancelled_writer or closing is None or task is None
                or task.uncancel() > 0):
            raise
        log.info("closing the stream of %s/%s: %s", access.app_id, access.user_id, closing[1])
        # The close frame waits behind what the client has not read yet; a client that reads
        # again soon learns why, one that does not is dropped all the same.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(*closing), CLOSE_WAIT_SECONDS)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client went away while we wrote
    finally:
        registry.remove(listener)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await container.streams.close(opened.subscription)
        if ws.client_state is WebSocketState.CONNECTING:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_GOING_AWAY)

