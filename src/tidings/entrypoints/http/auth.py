"""Who is calling, and what their credential lets them reach."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ...domain.apps import CredentialKind, Principal
from ...domain.errors import BadRequest, Forbidden, NotFound, RateLimited, Unauthenticated
from ...domain.ratelimit import TokenBucket
from ...domain.validation import check_user_id
from .deps import services

_bearer = HTTPBearer(auto_error=False, description="an admin key (tda_…), an app secret key "
                     "(tds_…) or a user token (JWT)")
ME = "me"


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, scope: str) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get(scope)
        if bucket is None:
            bucket = self._buckets[scope] = TokenBucket(self._rate, self._burst, self._burst, now)
        wait = bucket.take(now)
        if wait:
            raise RateLimited(f"more than {self._rate:g} requests a second for this app",
                              retry_after=wait)


async def authenticate(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthenticated("send `Authorization: Bearer <key or user token>`")
    principal, key = await services(request).credentials.authenticate(creds.credentials)
    request.app.state.rate_limiter.check(principal.app_id or "~admin")
    request.state.key = key
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def require_admin(p: Principal) -> None:
    if p.kind is not CredentialKind.ADMIN:
        raise Forbidden("this needs the admin key")


def require_backend(p: Principal) -> str:
    """An app's secret key: the app's backend, which may act for any of its users."""
    if p.kind is not CredentialKind.APP or p.app_id is None:
        raise Forbidden("this needs an app secret key (tds_…)")
    return p.app_id


def user_scope(p: Principal, user_id: str) -> tuple[str, str]:
    """The (app, user) a `/v1/users/{user_id}/…` path reaches with this credential.

    A user token reaches only its own user (another user's path is 404, as if it did not
    exist); `me` stands for the token's own user.
    """
    if p.kind is CredentialKind.USER and p.app_id and p.user_id:
        if user_id in (ME, p.user_id):
            return p.app_id, p.user_id
        raise NotFound(f"user {user_id} not found")
    if p.kind is CredentialKind.APP and p.app_id:
        if user_id == ME:
            raise BadRequest("`me` stands for a user token's own user; use the user id with an app key")
        return p.app_id, check_user_id(user_id)
    raise Forbidden("this needs an app secret key or the user's own token")
