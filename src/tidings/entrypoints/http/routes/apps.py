"""Apps and their keys (the operator's admin key)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ....domain.apps import CredentialKind
from ....domain.errors import FieldError, ValidationFailed
from ....domain.pagination import decode_cursor, page_of
from ....domain.stream import CLOSE_GONE, CLOSE_UNAUTHENTICATED, Kick
from ....domain.validation import check_app_id
from ....ports import Tx
from ....service.apps import AppChanges
from ....service.idempotency import Replay
from ....service.keys import MintedKey
from .. import render
from ..auth import Caller, require_admin
from ..deps import services
from ..idempotent import begin, replay, respond
from ..jsonbody import JsonRoute
from ..public_urls import public_url_problem
from ..schemas import AppOut, AppPage, AppPut, KeyCreated, KeyPage

router = APIRouter(prefix="/v1/apps", tags=["apps"], route_class=JsonRoute)
Limit = Annotated[int, Query(ge=1, le=200)]


@router.put("/{app_id}", response_model=AppOut, responses={201: {"model": AppOut}})
async def put_app(app_id: str, body: AppPut, request: Request, caller: Caller) -> Response:
    """Create the app (201) or update it (200). Named providers are replaced, `null` removes
    one, providers not named are kept; `webhook: null` removes the webhook."""
    require_admin(caller)
    check_app_id(app_id)
    fields = body.model_fields_set
    container = services(request)
    allow_private = container.settings.allow_private_webhooks
    urls = [("webhook.url", body.webhook.url)] if body.webhook else []
    hook = (body.providers or {}).get("webhook")
    if hook and hook.get("url"):
        urls.append(("providers.webhook.url", hook["url"]))
    problems = [FieldError(where, problem) for where, url in urls
                if (problem := await public_url_problem(url, allow_private))]
    if problems:
        raise ValidationFailed("a webhook URL must reach a public address (set "
                               "TIDINGS_ALLOW_PRIVATE_WEBHOOKS=true to allow private ones)",
                               errors=problems)
    changes = AppChanges(
        name=body.name,
        providers=body.providers,
        routing=body.model_dump(include={"routing"})["routing"] if body.routing is not None else None,
        defaults=body.defaults.model_dump(exclude_none=True) if body.defaults else None,
        webhook=body.webhook.model_dump(exclude={"secret"}) if body.webhook else None,
        clear_webhook="webhook" in fields and body.webhook is None,
        webhook_secret=body.webhook.secret if body.webhook else None,
    )
    app, created = await container.apps.put(app_id, changes)
    doc = render.app(app)
    if body.webhook and doc.get("webhook") is not None:
        # The signing secret is shown to the operator who sets the webhook, never on reads.
        doc["webhook"] = {**doc["webhook"], "secret": container.apps.webhook_secret(app)}
    return render.json_response(doc, 201 if created else 200)


@router.get("/{app_id}", response_model=AppOut)
async def get_app(app_id: str, request: Request, caller: Caller) -> Response:
    if not (caller.kind is CredentialKind.APP and caller.app_id == app_id):
        require_admin(caller)
    app = await services(request).apps.get(app_id)
    return render.json_response(render.app(app))


@router.get("", response_model=AppPage)
async def list_apps(request: Request, caller: Caller, limit: Limit = 50,
                    cursor: str | None = None) -> Response:
    require_admin(caller)
    after = decode_cursor(cursor)[0] if cursor else None
    page = page_of(await services(request).apps.list(limit + 1, after), limit)
    return render.json_response({"items": [render.app(a) for a in page.items],
                                 "next_cursor": page.next_cursor})


@router.delete("/{app_id}", status_code=204, response_class=Response)
async def delete_app(app_id: str, request: Request, caller: Caller) -> Response:
    """Deletes the app with everything it owns: keys, users, devices, notifications."""
    require_admin(caller)
    await services(request).apps.delete(app_id)
    services(request).credentials.forget_app(app_id)
    await services(request).streams.kick(Kick(CLOSE_GONE, "the app was deleted", app_id=app_id))
    return Response(status_code=204)


@router.post("/{app_id}/keys", status_code=201, response_model=KeyCreated)
async def create_key(app_id: str, request: Request, caller: Caller) -> Response:
    """Mints an app secret key and its signing secret; both are shown this once."""
    require_admin(caller)
    container = services(request)
    started = await begin(request, caller)
    if isinstance(started, Replay):
        return replay(started)

    async def mint(tx: Tx) -> MintedKey:
        return await container.credentials.mint_app_key(tx, app_id)

    def show(minted: MintedKey) -> tuple[int, bytes]:
        body = render.key(minted.key) | {"key": minted.raw, "signing_secret": minted.signing_secret}
        return 201, orjson.dumps(body)

    return respond(await container.idempotency.run(started, mint, show, sensitive=True))


@router.get("/{app_id}/keys", response_model=KeyPage)
async def list_keys(app_id: str, request: Request, caller: Caller) -> Response:
    """The app's active keys (their prefixes; the secrets were shown once)."""
    require_admin(caller)
    keys = await services(request).credentials.list_keys(app_id)
    return render.json_response({"items": [render.key(k) for k in keys], "next_cursor": None})


@router.delete("/{app_id}/keys/{key_id}", status_code=204, response_class=Response)
async def revoke_key(app_id: str, key_id: str, request: Request, caller: Caller) -> Response:
    """Revokes the key at once; user tokens signed with its signing secret stop working too."""
    require_admin(caller)
    await services(request).credentials.revoke(app_id, key_id)
    await services(request).streams.kick(Kick(CLOSE_UNAUTHENTICATED, "the key was revoked",
                                              app_id=app_id, key_id=key_id))
    return Response(status_code=204)
