"""Each user's inbox (the app's backend, or the user's own token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response

from ....domain.notifications import Channel
from .. import render
from ..auth import Caller, user_scope
from ..deps import services
from ..jsonbody import JsonRoute
from ..schemas import InboxPage, NotificationOut, ReadAll, Updated

router = APIRouter(prefix="/v1/users/{user_id}/notifications", tags=["inbox"], route_class=JsonRoute)
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("", response_model=InboxPage)
async def inbox(user_id: str, request: Request, caller: Caller, channel: Channel | None = None,
                since: datetime | None = None, until: datetime | None = None,
                unread: bool = False, limit: Limit = 50, cursor: str | None = None,
                include: Annotated[Literal["deliveries"] | None, Query(
                    description="`deliveries` adds each notification's deliveries")] = None,
                ) -> Response:
    """Every notification sent to the user, newest first; `channel=in_app` is the in-app feed.
    `unread_count` counts the unread ones that `channel` selects. Items leave out their
    `deliveries` (a feed shows what was said, not how each device was reached) unless
    `include=deliveries` asks for them; `GET /v1/notifications/{id}` always has them."""
    app_id, uid = user_scope(caller, user_id)
    with_deliveries = include == "deliveries"
    page = await services(request).inbox.page(
        app_id, uid, channel=channel, since=since, until=until, unread_only=unread,
        limit=limit, cursor=cursor, with_deliveries=with_deliveries)
    items = [render.notification(n, with_deliveries) for n in page.items]
    return render.json_response({"items": items, "next_cursor": page.next_cursor,
                                 "unread_count": page.unread_count})


@router.post("/read-all", response_model=Updated)
async def read_all(user_id: str, request: Request, caller: Caller,
                   body: Annotated[ReadAll | None, Body()] = None) -> Response:
    """Marks every unread notification read (optionally of one channel, or older than `until`)."""
    app_id, uid = user_scope(caller, user_id)
    updated = await services(request).inbox.read_all(
        app_id, uid, body.channel if body else None, body.until if body else None)
    return render.json_response({"updated": updated})


@router.post("/{notification_id}/read", response_model=NotificationOut)
async def read(user_id: str, notification_id: str, request: Request, caller: Caller) -> Response:
    """Marks one notification read; idempotent, the first `read_at` is kept."""
    app_id, uid = user_scope(caller, user_id)
    found = await services(request).inbox.read(app_id, uid, notification_id)
    return render.json_response(render.notification(found))
