"""Who may open a stream: a user token for its own user (in the `Authorization` header, or in
`?token=` since browsers cannot set headers on a WebSocket), or an app's secret key for any of
its users (header only: a secret key in a URL ends up in logs)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers, QueryParams

from ...bootstrap import Container
from ...domain.apps import ADMIN_KEY_PREFIX, APP_KEY_PREFIX
from ...domain.errors import Unauthenticated, ValidationFailed
from ...domain.stream import parse_after
from ..http.auth import RateLimiter, user_scope


@dataclass(frozen=True)
class Access:
    app_id: str
    user_id: str
    key_id: str | None
    expires_at: float | None
    after: int | None


def bearer(header: str) -> str:
    scheme, credential = get_authorization_scheme_param(header)
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("send `Authorization: Bearer <user token or app key>`")
    return credential.strip()


async def authorize(container: Container, limiter: RateLimiter, user_id: str, headers: Headers,
                    query: QueryParams, resume_header: str | None = None) -> Access:
    header = headers.get("authorization")
    if header is not None:
        credential = bearer(header)
    else:
        credential = query.get("token") or ""
        if credential.startswith((APP_KEY_PREFIX, ADMIN_KEY_PREFIX)):
            raise Unauthenticated("keys go in the Authorization header, never in a URL; "
                                  "use a user token in ?token=")
        if not credential:
            raise Unauthenticated("send a user token in ?token= or the Authorization header")
    principal, _ = await container.credentials.authenticate(credential)
    if principal.expires_at is not None and principal.expires_at <= container.clock.now().timestamp():
        # Requests accept a token a little past its `exp` (clock skew); a stream would be
        # closed for it a second later, and the client would reconnect with it again.
        raise Unauthenticated("the user token has expired; get a new one")
    limiter.check(principal.app_id or "~admin")
    app_id, uid = user_scope(principal, user_id)
    # EventSource reconnects to the same URL with the newer Last-Event-ID: it wins over ?after=.
    raw_after = resume_header if resume_header else query.get("after")
    try:
        after = parse_after(raw_after)
    except ValueError as exc:
        raise ValidationFailed.on("after", str(exc)) from None
    return Access(app_id, uid, principal.key_id, principal.expires_at, after)
