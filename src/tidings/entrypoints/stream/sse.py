"""`GET /v1/users/{user_id}/events`: a user's events as server-sent events, for clients that
would rather read a plain HTTP response (and resume with `Last-Event-ID`, which EventSource
sends by itself when it reconnects)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ...domain.stream import CLIENT_GONE
from ...service.stream import Opened
from .access import authorize
from .listener import Frame
from .registry import StreamRegistry

router = APIRouter(tags=["real time"])
RETRY_MS = 3000
WRITE_TIMEOUT_SECONDS = 30.0
log = logging.getLogger("tidings.stream")


class EventStream(StreamingResponse):
    """Cleans up after itself however the response ends, even when the client is gone before
    the body starts (a generator that never ran never reaches its `finally`)."""

    def __init__(self, body: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]]) -> None:
        super().__init__(body, media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded(message: Message) -> None:
            # A client that reads nothing for this long holds a task and a subscription, and
            # would hold up the server's shutdown: it is dropped (it reconnects and resumes).
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await send(message)

        try:
            await super().__call__(scope, receive, bounded)
        except TimeoutError:
            log.info("dropped an event stream whose client read nothing for %.0f s",
                     WRITE_TIMEOUT_SECONDS)
        finally:
            await self._cleanup()


def _encode(batch: list[Frame]) -> bytes:
    parts = []
    for event_id, text in batch:
        if not text:
            parts.append(": heartbeat\n\n")
        elif event_id is None:
            parts.append(f"data: {text}\n\n")
        else:
            parts.append(f"id: {event_id}\ndata: {text}\n\n")
    return "".join(parts).encode()


@router.get("/v1/users/{user_id}/events", response_class=StreamingResponse, responses={
    200: {"content": {"text/event-stream": {}},
          "description": "one `data:` line of JSON per event, with its `id:`"}})
async def events(user_id: str, request: Request,
                 last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """The user's events (`notification.created`, `notification.read`, `unread_count`) as
    they happen; `Last-Event-ID` or `?after=` replays what was missed. Authenticated like the
    WebSocket: a user token (header or `?token=`), or an app key in the header."""
    container = request.app.state.container
    registry: StreamRegistry = request.app.state.streams
    access = await authorize(container, request.app.state.rate_limiter, user_id,
                             request.headers, request.query_params, last_event_id)
    listener, opened = await registry.open(container.streams, access,
                                           container.settings.stream_buffer_events,
                                           heartbeat=True)
    held: list[Opened] = [opened]
    subscription = opened.subscription
    del opened

    async def body() -> AsyncIterator[bytes]:
        batch: list[Frame] | None = listener.opening(held.pop())  # not kept once sent
        yield f"retry: {RETRY_MS}\n\n".encode() + _encode(batch or [])
        while True:
            batch = None
            batch = await listener.next()
            if batch is None:
                break
            yield _encode(batch)
        if listener.closing and listener.closing[0] != CLIENT_GONE:
            code, reason = listener.closing
            yield _encode([(None, orjson.dumps({"type": "stream.closed", "data": {
                "code": code, "reason": reason}}).decode())])

    async def cleanup() -> None:
        listener.close(CLIENT_GONE, "the response ended")
        registry.remove(listener)
        await container.streams.close(subscription)

    return EventStream(body(), cleanup)
