"""Topics and their subscribers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.responses import Response

from ....domain.topics import Subscription, Topic
from .. import render
from ..auth import Caller, require_backend, user_scope
from ..deps import services
from ..jsonbody import JsonRoute
from ..topic_schemas import (
    SubscriberPage,
    SubscriptionOut,
    TopicDetail,
    TopicOut,
    TopicPage,
    TopicPut,
    UserTopicPage,
)

router = APIRouter(tags=["topics"], route_class=JsonRoute)
Limit = Annotated[int, Query(ge=1, le=200)]


def _topic(t: Topic) -> dict[str, Any]:
    return {"key": t.key, "name": t.name, "created_at": render.ts(t.created_at),
            "updated_at": render.ts(t.updated_at)}


def _subscriber(s: Subscription) -> dict[str, Any]:
    return {"user_id": s.user_id, "subscribed_at": render.ts(s.created_at)}


def _user_topic(s: Subscription) -> dict[str, Any]:
    return {"topic": s.topic, "subscribed_at": render.ts(s.created_at)}


@router.put("/v1/topics/{topic}", response_model=TopicOut, responses={201: {"model": TopicOut}})
async def put_topic(topic: str, request: Request, caller: Caller,
                    body: Annotated[TopicPut | None, Body()] = None) -> Response:
    """Create (201) or update (200) a topic. Users can be subscribed only to a topic that
    exists, so that a typo in a key is an error rather than a silent new audience."""
    app_id = require_backend(caller)
    name_given = body is not None and "name" in body.model_fields_set
    found, created = await services(request).topics.put(
        app_id, topic, body.name if body is not None else None, name_given)
    return render.json_response(_topic(found), 201 if created else 200)


@router.get("/v1/topics", response_model=TopicPage)
async def list_topics(request: Request, caller: Caller, limit: Limit = 50,
                      cursor: str | None = None) -> Response:
    """The app's topics by key (without their subscriber counts: see `GET /v1/topics/{topic}`)."""
    app_id = require_backend(caller)
    page = await services(request).topics.list(app_id, limit, cursor)
    return render.json_response({"items": [_topic(t) for t in page.items],
                                 "next_cursor": page.next_cursor})


@router.get("/v1/topics/{topic}", response_model=TopicDetail)
async def get_topic(topic: str, request: Request, caller: Caller) -> Response:
    """The topic with how many users are subscribed to it."""
    app_id = require_backend(caller)
    found = await services(request).topics.get(app_id, topic)
    return render.json_response({**_topic(found.topic), "subscribers": found.subscribers})


@router.delete("/v1/topics/{topic}", status_code=204, response_class=Response)
async def delete_topic(topic: str, request: Request, caller: Caller) -> Response:
    """Removes the topic and all its subscriptions; broadcasts already expanding stop finding
    subscribers."""
    app_id = require_backend(caller)
    await services(request).topics.delete(app_id, topic)
    return Response(status_code=204)


@router.put("/v1/topics/{topic}/subscribers/{user_id}", response_model=SubscriptionOut,
            responses={201: {"model": SubscriptionOut}})
async def subscribe(topic: str, user_id: str, request: Request, caller: Caller) -> Response:
    """Subscribe the user (201), or confirm that it is subscribed (200). The app's backend may
    subscribe any user, a user token only itself (`me`). A user without a profile gets an
    empty one. The topic must exist (`PUT /v1/topics/{topic}`)."""
    app_id, uid = user_scope(caller, user_id)
    created = await services(request).topics.subscribe(app_id, topic, uid)
    return render.json_response({"topic": topic, "user_id": uid}, 201 if created else 200)


@router.delete("/v1/topics/{topic}/subscribers/{user_id}", status_code=204,
               response_class=Response)
async def unsubscribe(topic: str, user_id: str, request: Request, caller: Caller) -> Response:
    """Unsubscribe the user; 404 when it was not subscribed. A user token may unsubscribe only
    itself (`me`)."""
    app_id, uid = user_scope(caller, user_id)
    await services(request).topics.unsubscribe(app_id, topic, uid)
    return Response(status_code=204)


@router.get("/v1/topics/{topic}/subscribers", response_model=SubscriberPage)
async def list_subscribers(topic: str, request: Request, caller: Caller, limit: Limit = 50,
                           cursor: str | None = None) -> Response:
    """The topic's subscribers, newest first."""
    app_id = require_backend(caller)
    page = await services(request).topics.subscribers(app_id, topic, limit, cursor)
    return render.json_response({"items": [_subscriber(s) for s in page.items],
                                 "next_cursor": page.next_cursor})


@router.get("/v1/users/{user_id}/topics", response_model=UserTopicPage)
async def user_topics(user_id: str, request: Request, caller: Caller, limit: Limit = 50,
                      cursor: str | None = None) -> Response:
    """The topics the user is subscribed to, by key."""
    app_id, uid = user_scope(caller, user_id)
    page = await services(request).topics.of_user(app_id, uid, limit, cursor)
    return render.json_response({"items": [_user_topic(s) for s in page.items],
                                 "next_cursor": page.next_cursor})
