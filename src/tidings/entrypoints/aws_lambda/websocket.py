"""`tidings.entrypoints.aws_lambda.websocket.handler`: the routes of the WebSocket API.

API Gateway holds the sockets; this function sees three kinds of event and answers each at once.

`$connect` authenticates the upgrade request exactly as a node's stream does
(`entrypoints/stream/access.py`): a user token in `?token=` (browsers cannot set headers on a
WebSocket) or in `Authorization: Bearer …`; an app's secret key only in the header (a key in a
URL ends up in logs, so `?token=tds_…` is refused). The stream is a user's: a user token opens
its own (`?user_id=` may be left out, or be `me` or the token's user); an app key must name the
user with `?user_id=`. The connection is then recorded for that user and the answer is 200;
anything else answers the problem's status (401, 403, 404, 400, 429) and API Gateway refuses the
upgrade with it.

API Gateway accepts no frame for a connection before its `$connect` has returned, so nothing can
be sent from here: a client opens the socket, then sends `{"action": "sync"}` (with
`"after": "<last event id seen>"` to resume) and receives what a node's stream sends first: the
events it missed, or a `stream.reset` when they are no longer kept, then its `unread_count`.
From then on the events come as they happen (the hub posts them).

`$default` takes every frame a client sends: `{"action": "ping"}` is answered
`{"type": "pong"}`, `{"action": "sync"}` as above (`"type"` may stand for `"action"`, as on a
node's stream), and anything else gets an error frame `{"type": "error", "data": {"status",
"detail"}}`; the socket stays open. No frame from a client can make the function fail.

`$disconnect` forgets the connection (best effort on API Gateway's side: a connection whose
`$disconnect` never came is dropped when a post finds it gone, or by its ttl).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from ...domain.errors import TidingsError, ValidationFailed
from ...domain.masking import mask_token
from ...domain.stream import PONG_DOC, event_doc, parse_after, reset_doc, unread_doc
from . import events, runtime

if TYPE_CHECKING:
    from ...bootstrap import Container
    from .runtime import Runtime

log = logging.getLogger("tidings.lambda")

PONG = orjson.dumps(PONG_DOC)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    with rt.invocation("websocket", context):
        try:
            ev = events.checked(events.websocket, event)
        except events.BadEvent:
            return {"statusCode": 400}
        if ev.route == "$connect":
            return rt.run(connect(rt, ev))
        if ev.route == "$disconnect":
            return rt.run(disconnect(rt, ev))
        return rt.run(message(rt, ev))


def _refusal(exc: TidingsError) -> dict[str, Any]:
    from ..http.errors import from_error

    response = from_error(exc)
    return {"statusCode": response.status_code,
            "headers": {k: v for k, v in response.headers.items() if k != "content-length"},
            "body": bytes(response.body).decode()}


async def connect(rt: Runtime, ev: events.WebSocketEvent) -> dict[str, Any]:
    from starlette.datastructures import Headers, QueryParams

    from ..http.auth import ME, RateLimiter
    from ..stream.access import authorize

    container = await rt.container()
    limiter = rt.cache.get("limiter")
    if limiter is None:
        limiter = rt.cache["limiter"] = RateLimiter(container.settings.rate_limit_per_second,
                                                    container.settings.rate_limit_burst)
    try:
        access = await authorize(container, limiter, ev.query.get("user_id") or ME,
                                 Headers(ev.headers), QueryParams(ev.query))
    except TidingsError as exc:
        log.info("refused WebSocket connection %s: %s", mask_token(ev.connection_id), exc.detail)
        return _refusal(exc)
    book = await rt.connections()
    await book.add(access.app_id, access.user_id, ev.connection_id, container.clock.now(),
                   key_id=access.key_id)
    log.info("WebSocket connection %s opened for %s/%s", mask_token(ev.connection_id),
             access.app_id, mask_token(access.user_id))
    return {"statusCode": 200}


async def disconnect(rt: Runtime, ev: events.WebSocketEvent) -> dict[str, Any]:
    book = await rt.connections()
    owner = await book.remove(ev.connection_id)
    if owner is not None:
        log.info("WebSocket connection %s of %s/%s closed", mask_token(ev.connection_id),
                 owner[0], mask_token(owner[1]))
    return {"statusCode": 200}


def error_frame(status: int, detail: str) -> bytes:
    return orjson.dumps({"type": "error", "data": {"status": status, "detail": detail}})


async def message(rt: Runtime, ev: events.WebSocketEvent) -> dict[str, Any]:
    frames = await _answer(rt, ev)
    poster = await rt.poster()
    for data in frames:
        if not await poster.post(ev.connection_id, data):
            await (await rt.connections()).remove(ev.connection_id)
            break
    return {"statusCode": 200}


async def _answer(rt: Runtime, ev: events.WebSocketEvent) -> list[bytes]:
    limit = rt.settings.stream_max_frame_bytes
    if ev.body is None:
        return [error_frame(400, "send text frames of JSON")]
    if len(ev.body) > limit:
        return [error_frame(413, f"frames from clients are at most {limit} bytes")]
    try:
        doc = orjson.loads(ev.body)
    except orjson.JSONDecodeError:
        return [error_frame(400, "a frame is not JSON")]
    action = (doc.get("action") or doc.get("type")) if isinstance(doc, dict) else None
    if action == "ping":
        return [PONG]
    if action == "sync":
        return await _sync(rt, ev, doc.get("after"))
    return [error_frame(400, 'a client sends {"action": "ping"} or {"action": "sync"}')]


async def _sync(rt: Runtime, ev: events.WebSocketEvent, raw_after: Any) -> list[bytes]:
    """The opening frames of a node's stream: what was missed (or a reset), then the counts."""
    try:
        after = parse_after(str(raw_after) if raw_after is not None else None)
    except ValueError as exc:
        return [error_frame(422, str(ValidationFailed.on("after", str(exc))))]
    owner = await (await rt.connections()).get(ev.connection_id)
    if owner is None:
        return [error_frame(404, "this connection is not known (any more): reconnect")]
    container = await rt.container()
    return await opening(container, *owner, after)


async def opening(container: Container, app_id: str, user_id: str,
                  after: int | None) -> list[bytes]:
    head, missed, reset = await container.streams.replay(app_id, user_id, after)
    out = [orjson.dumps(reset_doc(head.seq))] if reset else \
        [orjson.dumps(event_doc(e)) for e in missed]
    out.append(orjson.dumps(unread_doc(head.seq, head.unread_in_app, head.unread)))
    return out
