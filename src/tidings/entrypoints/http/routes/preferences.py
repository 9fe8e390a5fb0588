"""A user's notification preferences (the app's backend, or the user with their own token)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ....domain.preferences import Preferences
from .. import render
from ..auth import Caller, user_scope
from ..deps import services
from ..jsonbody import JsonRoute
from ..schemas import PreferencesDoc, PreferencesOut

router = APIRouter(prefix="/v1/users", tags=["preferences"], route_class=JsonRoute)


def _out(prefs: Preferences, required: frozenset[str]) -> Response:
    return render.json_response({**prefs.to_doc(), "mandatory_categories": sorted(required)})


@router.get("/{user_id}/preferences", response_model=PreferencesOut)
async def get_preferences(user_id: str, request: Request, caller: Caller) -> Response:
    """What the user opted out of; `mandatory_categories` cannot be opted out of."""
    app_id, uid = user_scope(caller, user_id)
    return _out(*await services(request).preferences.get(app_id, uid))


@router.put("/{user_id}/preferences", response_model=PreferencesOut)
async def put_preferences(user_id: str, body: PreferencesDoc, request: Request,
                          caller: Caller) -> Response:
    """Replace the user's preferences. `{"channels": {"sms": false}}` opts out of SMS;
    `{"categories": {"marketing": {"enabled": false}}}` out of a category on every channel;
    `{"categories": {"billing": {"channels": {"email": false}}}}` out of one channel of one
    category. A send to an opted-out channel becomes a `skipped` delivery with the error
    `preference`. Opting out of a mandatory category of the app is a 422."""
    app_id, uid = user_scope(caller, user_id)
    doc = body.model_dump(mode="json", exclude_none=True)
    return _out(*await services(request).preferences.put(app_id, uid, doc))
