"""Broadcasts: one send to a topic's subscribers, a segment or every user of the app."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ....domain.broadcasts import Progress
from ....domain.pagination import id_cursor, page_of
from ....domain.segments import parse_segment
from ....service.broadcasting import BroadcastView
from ....service.idempotency import Replay
from .. import render
from ..auth import Caller, require_backend
from ..deps import services
from ..idempotent import begin, replay, respond
from ..jsonbody import JsonRoute
from ..messages import message_of, when_of
from ..schemas import BroadcastCreate, BroadcastOut, BroadcastPage

router = APIRouter(prefix="/v1/broadcasts", tags=["sending"], route_class=JsonRoute)
Limit = Annotated[int, Query(ge=1, le=200)]


def _render(view: BroadcastView) -> tuple[int, bytes]:
    return 202, orjson.dumps(render.broadcast(view.broadcast, view.progress))


@router.post("", status_code=202, response_model=BroadcastOut)
async def create(body: BroadcastCreate, request: Request, caller: Caller) -> Response:
    """Accept a broadcast and answer at once; the worker expands it in batches into one
    notification per recipient (`GET /v1/broadcasts/{id}` shows how far it got). With an
    instant `send_at` the audience is taken and expanded at that time; with
    `{"local_time": "HH:MM"}` each recipient's notification is scheduled for that time of
    their own day (their timezone, else the app's default, else UTC). An unknown topic is 404."""
    app_id = require_backend(caller)
    container = services(request)
    started = await begin(request, caller)
    if isinstance(started, Replay):
        return replay(started)
    when = when_of(body, container.clock.now())
    if body.to.segment is not None:
        parse_segment(body.to.segment, "to.segment")
    app = await container.apps.cached(app_id)
    audience = body.to.model_dump(exclude_none=True)
    answer = await container.broadcasts.create(
        app_id, audience, message_of(body, app.defaults), when, started, _render)
    return respond(answer)


@router.get("/{broadcast_id}", response_model=BroadcastOut)
async def get(broadcast_id: str, request: Request, caller: Caller) -> Response:
    """The broadcast and its progress: recipients expanded, notifications by status."""
    app_id = require_backend(caller)
    view = await services(request).broadcasts.get(app_id, broadcast_id)
    return render.json_response(render.broadcast(view.broadcast, view.progress))


@router.delete("/{broadcast_id}", response_model=BroadcastOut)
async def cancel(broadcast_id: str, request: Request, caller: Caller) -> Response:
    """Cancel: the expansion stops at once; notifications still scheduled are canceled and
    deliveries not yet handed to a provider are skipped, shortly after. Canceling again
    changes nothing."""
    app_id = require_backend(caller)
    view = await services(request).broadcasts.cancel(app_id, broadcast_id)
    return render.json_response(render.broadcast(view.broadcast, view.progress))


@router.get("", response_model=BroadcastPage)
async def list_broadcasts(request: Request, caller: Caller, limit: Limit = 50,
                          cursor: str | None = None) -> Response:
    """The app's broadcasts, newest first (progress counts only on the single broadcast)."""
    app_id = require_backend(caller)
    found = await services(request).broadcasts.list(app_id, limit + 1, id_cursor(cursor))
    page = page_of(found, limit)
    return render.json_response({
        "items": [render.broadcast(b, Progress()) for b in page.items],
        "next_cursor": page.next_cursor})
