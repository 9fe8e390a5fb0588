"""Users (recipients), their user tokens, and their devices (pairing)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response

from ....domain.apps import route
from ....domain.devices import Device
from ....domain.errors import ValidationFailed
from ....domain.pagination import decode_cursor, page_of
from ....domain.segments import And, Segment, from_query, parse_segment
from ....domain.stream import CLOSE_GONE, Kick
from ....domain.users import attribute_filters
from ....ports import Tx
from ....service.idempotency import Replay
from ....service.pairing import Registration
from ....service.users import Profile
from .. import render
from ..auth import Caller, require_backend, user_scope
from ..deps import services
from ..idempotent import begin, replay, respond
from ..jsonbody import JsonRoute
from ..public_urls import public_url_problem
from ..schemas import (
    DeviceOut,
    DevicePage,
    DeviceRegister,
    TokenOut,
    TokenRequest,
    UserOut,
    UserPage,
    UserPut,
)

router = APIRouter(prefix="/v1/users", tags=["users"], route_class=JsonRoute)
Limit = Annotated[int, Query(ge=1, le=200)]


@router.put("/{user_id}", response_model=UserOut, responses={201: {"model": UserOut}})
async def put_user(user_id: str, body: UserPut, request: Request, caller: Caller) -> Response:
    """Create (201) or update (200) the profile; fields left out are kept, `null` clears one."""
    app_id, uid = user_scope(caller, user_id)
    fields = frozenset(body.model_fields_set)
    profile = Profile(email=body.email, phone=body.phone, timezone=body.timezone,
                      locale=body.locale, attributes=body.attributes,
                      quiet_hours=body.quiet_hours.model_dump() if body.quiet_hours else None)
    user, created = await services(request).users.put(app_id, uid, profile, fields)
    return render.json_response(render.user(user), 201 if created else 200)


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: str, request: Request, caller: Caller) -> Response:
    app_id, uid = user_scope(caller, user_id)
    return render.json_response(render.user(await services(request).users.get(app_id, uid)))


@router.delete("/{user_id}", status_code=204, response_class=Response)
async def delete_user(user_id: str, request: Request, caller: Caller) -> Response:
    """Removes the user's profile, devices and inbox."""
    app_id = require_backend(caller)
    _, uid = user_scope(caller, user_id)
    await services(request).users.delete(app_id, uid)
    await services(request).streams.kick(Kick(CLOSE_GONE, "the user was deleted",
                                              app_id=app_id, user_id=uid))
    return Response(status_code=204)


@router.get("", response_model=UserPage)
async def list_users(
    request: Request, caller: Caller, limit: Limit = 50, cursor: str | None = None,
    segment: Annotated[str | None, Query(
        alias="filter", description="a segment filter: a JSON object, URL-encoded")] = None,
    count: Annotated[bool, Query(description="add `total`, the number of users matching")] = False,
) -> Response:
    """Users by id, or the audience of a segment before broadcasting to it.

    `filter` is a segment, a JSON object such as `{"attributes.plan": "pro",
    "created_at": {"$gte": "2026-01-01T00:00:00Z"}}`, on `attributes.<path>`, `timezone`,
    `locale` and `created_at`, with `$in`, `$nin`, `$ne`, `$exists`, `$gt`, `$gte`, `$lt`,
    `$lte`, `$and` and `$or` (equality and `$in` match any element of an array; a number never
    equals a string). `attribute.<name>=<value>` is the short form of equality on one
    attribute (the text may stand for a string, a number or a boolean; repeat for AND). All the
    filters given must hold. `count=true` adds `total`, how many users match in all. A filter
    that is not valid JSON, not an object, or not a valid segment is a 422 naming where in
    `filter` the problem is."""
    app_id = require_backend(caller)
    parts: list[Segment] = []
    if segment is not None:
        try:
            doc = orjson.loads(segment)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailed.on("filter", "must be a JSON object (URL-encoded)") from exc
        parts.append(parse_segment(doc, "filter"))
    short = from_query(attribute_filters(list(request.query_params.multi_items())))
    if short is not None:
        parts.append(short)
    chosen = None if not parts else parts[0] if len(parts) == 1 else And(tuple(parts))
    after = decode_cursor(cursor)[0] if cursor else None
    users = services(request).users
    page = page_of(await users.list(app_id, chosen, limit + 1, after), limit)
    body: dict[str, Any] = {"items": [render.user(u) for u in page.items],
                            "next_cursor": page.next_cursor}
    if count:
        body["total"] = await users.count(app_id, chosen)
    return render.json_response(body)


@router.post("/{user_id}/tokens", response_model=TokenOut)
async def mint_token(user_id: str, request: Request, caller: Caller,
                     body: Annotated[TokenRequest | None, Body()] = None) -> Response:
    """A user token (HS256 JWT, `sub` = user, `aud` = app) signed with this key's signing
    secret, for a mobile app or browser to act as this one user."""
    app_id = require_backend(caller)
    _, uid = user_scope(caller, user_id)
    container = services(request)
    ttl = (body.ttl if body and body.ttl else None) or container.settings.user_token_ttl_seconds
    token = container.credentials.mint_user_token(app_id, uid, request.state.key, ttl)
    return render.json_response({"token": token.token, "expires_at": render.ts(token.expires_at)})


# --- devices --------------------------------------------------------------------------------
@router.post("/{user_id}/devices", response_model=DeviceOut, responses={201: {"model": DeviceOut}})
async def register_device(user_id: str, body: DeviceRegister, request: Request,
                          caller: Caller) -> Response:
    """Register (201) or refresh (200) a device. Call it on every log-in and app start: the
    same token refreshes; a token of another user moves here; `device_id` with a new token
    rotates it in place; registering re-enables a device the provider had disabled."""
    app_id, uid = user_scope(caller, user_id)
    container = services(request)
    if "webhook" in (body.platform, body.provider):
        if not isinstance(body.token, str) or not body.token.startswith(("https://", "http://")):
            raise ValidationFailed.on("token", "a webhook device's token is the URL to POST to")
        problem = await public_url_problem(body.token, container.settings.allow_private_webhooks)
        if problem:
            raise ValidationFailed.on("token", problem)
    started = await begin(request, caller)
    if isinstance(started, Replay):
        return replay(started)
    app = await container.apps.cached(app_id)
    token = body.token if isinstance(body.token, str) else body.token.model_dump(exclude_none=True)
    reg = Registration(platform=body.platform, token=token, provider=body.provider,
                       device_info=body.device_info, app_version=body.app_version,
                       device_id=body.device_id)

    async def pair(tx: Tx) -> tuple[Device, bool]:
        return await container.pairing.register(tx, app_id, uid, reg)

    def show(result: tuple[Device, bool]) -> tuple[int, bytes]:
        device, created = result
        body = render.device(device, route(app, "push", device.platform))
        return (201 if created else 200), orjson.dumps(body)

    return respond(await container.idempotency.run(started, pair, show))


@router.get("/{user_id}/devices", response_model=DevicePage)
async def list_devices(user_id: str, request: Request, caller: Caller) -> Response:
    app_id, uid = user_scope(caller, user_id)
    container = services(request)
    app = await container.apps.cached(app_id)
    devices = await container.pairing.list(app_id, uid)
    return render.json_response({
        "items": [render.device(d, route(app, "push", d.platform)) for d in devices],
        "next_cursor": None})


@router.delete("/{user_id}/devices/{device_id}", status_code=204, response_class=Response)
async def delete_device(user_id: str, device_id: str, request: Request, caller: Caller) -> Response:
    app_id, uid = user_scope(caller, user_id)
    await services(request).pairing.delete(app_id, uid, device_id)
    return Response(status_code=204)
