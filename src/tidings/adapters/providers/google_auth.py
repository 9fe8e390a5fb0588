"""OAuth 2 access tokens for a Google service account: the JWT-bearer grant (RFC 7523) that
Google's token endpoint speaks, signed RS256 with the account's private key.

A token is kept until shortly before it expires, and concurrent callers that find it stale
share a single refresh, so a burst of sends never turns into a burst of token requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .http import TRANSPORT_ERRORS

FIREBASE_MESSAGING_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 -- a URL, not a secret
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google accepts assertions valid for at most an hour.
ASSERTION_LIFETIME = 3600
# A token this close to its expiry is refreshed before use: a request signed with it may
# still be in flight when it lapses.
REFRESH_MARGIN = 60.0


class TokenError(Exception):
    """No access token could be had; the message says why, without any secret."""


class ServiceAccountTokens:
    """Access tokens of one service account for one scope."""

    def __init__(self, credentials: Mapping[str, Any], scope: str = FIREBASE_MESSAGING_SCOPE, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client_email: str = credentials["client_email"]
        self.token_uri: str = credentials.get("token_uri") or DEFAULT_TOKEN_URI
        self._pem: str = credentials["private_key"]
        self._key_id: str | None = credentials.get("private_key_id")
        self._scope = scope
        self._clock = clock
        self._signing_key: Any = None
        self._token: str | None = None
        self._refresh_at = 0.0
        self._refreshing: asyncio.Future[str] | None = None

    @property
    def current(self) -> str | None:
        """The cached token while it is fresh enough to use, else None."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def token(self, session: aiohttp.ClientSession) -> str:
        """A usable access token; raises TokenError when the token endpoint cannot give one."""
        cached = self.current
        if cached is not None:
            return cached
        pending = self._refreshing
        if pending is None:
            pending = self._refreshing = asyncio.ensure_future(self._refresh(session))
            pending.add_done_callback(self._refreshed)
        # Shielded: one caller cancelled must not cancel the refresh the others wait for.
        return await asyncio.shield(pending)

    def invalidate(self, token: str) -> None:
        """The service refused `token`: forget it, unless a newer one replaced it already."""
        if self._token == token:
            self._token = None
            self._refresh_at = 0.0

    def _refreshed(self, future: asyncio.Future[str]) -> None:
        self._refreshing = None
        if not future.cancelled():
            future.exception()  # retrieved here, so a refresh nobody awaits logs nothing

    def assertion(self, now: int | None = None) -> str:
        """The signed JWT that the token endpoint trades for an access token."""
        if self._signing_key is None:
            try:
                self._signing_key = load_pem_private_key(self._pem.encode(), password=None)
            except (ValueError, TypeError) as exc:
                raise TokenError(f"the service account's private key is unreadable: {exc}") from None
        issued = int(time.time()) if now is None else now
        claims = {"iss": self.client_email, "scope": self._scope, "aud": self.token_uri,
                  "iat": issued, "exp": issued + ASSERTION_LIFETIME}
        headers = {"kid": self._key_id} if self._key_id else None
        return jwt.encode(claims, self._signing_key, algorithm="RS256", headers=headers)

    async def _refresh(self, session: aiohttp.ClientSession) -> str:
        form = {"grant_type": JWT_BEARER, "assertion": self.assertion()}
        started = self._clock()
        try:
            async with session.post(self.token_uri, data=form,
                                    headers={"Accept": "application/json"}) as resp:
                status, raw = resp.status, await resp.read()
        except TRANSPORT_ERRORS as exc:
            detail = str(exc).strip()
            raise TokenError(f"token endpoint unreachable: {type(exc).__name__}"
                             + (f": {detail}"[:200] if detail else "")) from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise TokenError(f"token endpoint answered {status} without JSON")
        if status != 200:
            error = str(answer.get("error") or "error")
            description = str(answer.get("error_description") or "").strip()
            raise TokenError(f"token endpoint answered {status} {error}"
                             + (f": {description}"[:200] if description else ""))
        token, expires_in = answer.get("access_token"), answer.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise TokenError("token endpoint answered 200 without an access token")
        self._token = token
        # A token that lives less than twice the margin is used for half its life.
        self._refresh_at = started + float(expires_in) - min(REFRESH_MARGIN, float(expires_in) / 2)
        return token
