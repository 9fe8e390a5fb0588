"""The Idempotency-Key header, as every creating POST reads it."""

from __future__ import annotations

import hashlib
import json

from fastapi import Request
from starlette.responses import Response

from ...domain.apps import Principal
from ...domain.idempotency import IdempotencyClaim, fingerprint
from ...service.idempotency import Answer, Replay
from .deps import services

REPLAYED = {"Idempotent-Replayed": "true"}


async def begin(request: Request, principal: Principal) -> Replay | IdempotencyClaim | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    raw = await request.body()
    try:
        # Parsed once per request: the JSON route has read it already and keeps the value.
        value = await request.json() if raw else None
    except json.JSONDecodeError:
        value = raw.decode("utf-8", "replace")
    scope = principal.app_id or "~admin"
    if principal.user_id is not None:
        # A user's key is that user's alone: `/v1/users/me/…` is the same path for everyone.
        key = "user:" + hashlib.sha256(f"{principal.user_id}\x1f{key}".encode()).hexdigest()
    fp = fingerprint(request.method, request.url.path, value)
    return await services(request).idempotency.check(scope, key, fp)


def replay(r: Replay) -> Response:
    return Response(r.body, status_code=r.status_code, media_type="application/json",
                    headers=REPLAYED)


def respond(a: Answer) -> Response:
    return Response(a.body, status_code=a.status_code, media_type="application/json",
                    headers=REPLAYED if a.replayed else None)
