"""Sending (an app's backend) and reading back what was sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ....domain.errors import ValidationFailed
from ....domain.validation import is_e164, is_email
from ....service.idempotency import Replay
from ....service.sending import Audience
from .. import render
from ..auth import Caller, require_backend
from ..deps import services
from ..idempotent import begin, replay, respond
from ..jsonbody import JsonRoute
from ..messages import message_of, when_of
from ..schemas import Items, NotificationCreate, NotificationOut, NotificationPage

router = APIRouter(prefix="/v1/notifications", tags=["sending"], route_class=JsonRoute)
Limit = Annotated[int, Query(ge=1, le=200)]


def _render(items: list) -> tuple[int, bytes]:  # type: ignore[type-arg]
    return 202, render.notifications_body(items)


@router.post("", status_code=202, response_model=Items)
async def send(body: NotificationCreate, request: Request, caller: Caller) -> Response:
    """Accept a notification for one recipient or a few: one notification per recipient, one
    delivery per target, written before this answers; the worker sends them afterwards.
    With `send_at` (an instant, or `{"local_time": "HH:MM"}` in each recipient's timezone) the
    notifications are `scheduled` and go at that time; until then they are not in the inbox
    and can be canceled with `DELETE /v1/notifications/{id}`."""
    app_id = require_backend(caller)
    container = services(request)
    started = await begin(request, caller)
    if isinstance(started, Replay):
        return replay(started)
    when = when_of(body, container.clock.now())
    app = await container.apps.cached(app_id)
    to = body.to
    audience = Audience(
        user_ids=tuple(to.user_ids or ((to.user_id,) if to.user_id else ())),
        phone=to.phone, email=to.email)
    message = message_of(body, app.defaults,
                         ("sms",) if to.phone else ("email",) if to.email else None)
    answer = await container.sender.send(app, audience, message, started, _render, when)
    return respond(answer)


@router.get("/{notification_id}", response_model=NotificationOut)
async def get_notification(notification_id: str, request: Request, caller: Caller) -> Response:
    app_id = require_backend(caller)
    found = await services(request).inbox.get(app_id, notification_id)
    return render.json_response(render.notification(found))


@router.delete("/{notification_id}", status_code=204, response_class=Response,
               responses={409: {"description": "the notification is no longer scheduled"}})
async def cancel(notification_id: str, request: Request, caller: Caller) -> Response:
    """Cancels a notification that is still scheduled (409 once it has been queued)."""
    app_id = require_backend(caller)
    await services(request).inbox.cancel(app_id, notification_id)
    return Response(status_code=204)


@router.get("", response_model=NotificationPage)
async def by_address(request: Request, caller: Caller,
                     to: Annotated[str, Query(description="a phone number (E.164) or e-mail address")],
                     limit: Limit = 50, cursor: str | None = None) -> Response:
    """Messages sent to a raw address (`to.phone` / `to.email`), newest first."""
    app_id = require_backend(caller)
    if not (is_e164(to) or is_email(to)):
        raise ValidationFailed.on("to", "must be an E.164 phone number or an e-mail address")
    items, next_cursor = await services(request).inbox.by_address(app_id, to, limit, cursor)
    return render.json_response({"items": [render.notification(n) for n in items],
                                 "next_cursor": next_cursor})
