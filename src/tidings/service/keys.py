"""Credentials: admin keys, app keys (with their signing secrets) and user tokens.

Keys are random, 256-bit, so a plain SHA-256 is the right hash at rest: nothing to brute-force,
and a lookup by hash stays one index probe. Verified credentials are cached for a short time
per process; a revocation through this process takes effect at once, through another process
within `cache_seconds`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from ..domain.apps import (
    ADMIN_KEY_PREFIX,
    APP_KEY_PREFIX,
    ApiKey,
    CredentialKind,
    Principal,
)
from ..domain.errors import NotFound, Unauthenticated, ValidationFailed
from ..domain.ids import new_id
from ..domain.validation import APP_ID, check_user_id, is_user_id
from ..ports import Clock, Store, Tx
from .secrets import SecretBox
from .ttlcache import TtlCache

JWT_ALGORITHM = "HS256"
JWT_LEEWAY_SECONDS = 30
MAX_TOKEN_TTL = 30 * 24 * 3600


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class MintedKey:
    key: ApiKey
    raw: str
    signing_secret: str | None


@dataclass(frozen=True)
class UserToken:
    token: str
    expires_at: datetime


def new_key(kind: CredentialKind, app_id: str | None, box: SecretBox, now: datetime,
            raw: str | None = None) -> MintedKey:
    prefix = ADMIN_KEY_PREFIX if kind is CredentialKind.ADMIN else APP_KEY_PREFIX
    raw = raw or prefix + secrets.token_urlsafe(32)
    signing = secrets.token_urlsafe(32) if kind is CredentialKind.APP else None
    key = ApiKey(
        id=new_id(), kind=kind, app_id=app_id, prefix=raw[:12], key_hash=hash_key(raw),
        signing_secret=box.seal(signing) if signing else None, created_at=now,
    )
    return MintedKey(key, raw, signing)


class Credentials:
    def __init__(self, store: Store, clock: Clock, box: SecretBox,
                 cache_seconds: float = 2.0) -> None:
        self._store = store
        self._clock = clock
        self._box = box
        self._keys: TtlCache[str, ApiKey | None] = TtlCache(cache_seconds)
        self._signers: TtlCache[str, list[tuple[str, str]]] = TtlCache(cache_seconds)

    # -- minting -------------------------------------------------------------------------
    async def mint_app_key(self, tx: Tx, app_id: str) -> MintedKey:
        """Within `tx`, so that an idempotent request stores its answer with the key."""
        minted = new_key(CredentialKind.APP, app_id, self._box, self._clock.now())
        if await tx.apps.get(app_id) is None:
            raise NotFound(f"app {app_id} not found")
        await tx.keys.add(minted.key)
        self._signers.drop(app_id)
        return minted

    async def list_keys(self, app_id: str) -> list[ApiKey]:
        async with self._store.reader() as tx:
            if await tx.apps.get(app_id) is None:
                raise NotFound(f"app {app_id} not found")
            return await tx.keys.active(app_id)

    def forget_app(self, app_id: str) -> None:
        """Drop what this process trusts of a deleted app's credentials."""
        self._signers.drop(app_id)
        for key_hash, key in self._keys.values():
            if key is not None and key.app_id == app_id:
                self._keys.drop(key_hash)

    async def is_active(self, key_id: str) -> bool:
        """Whether the key still exists unrevoked (asked of open streams now and then)."""
        async with self._store.reader() as tx:
            key = await tx.keys.get(key_id)
        return key is not None and key.revoked_at is None

    async def revoke(self, app_id: str, key_id: str) -> None:
        async with self._store.transaction() as tx:
            key = await tx.keys.get(key_id)
            if key is None or key.app_id != app_id or key.revoked_at is not None:
                raise NotFound(f"key {key_id} not found")
            await tx.keys.revoke(key_id, self._clock.now())
        self._keys.drop(key.key_hash)
        self._signers.drop(app_id)

    async def ensure_admin(self, raw: str | None) -> str | None:
        """Make sure the operator can get in: register `raw` (TIDINGS_ADMIN_KEY) if given, else
        mint a first admin key when there is none. Returns a newly minted key, once."""
        if raw is not None and not raw.startswith(ADMIN_KEY_PREFIX):
            raise ValidationFailed.on("TIDINGS_ADMIN_KEY", f"must start with {ADMIN_KEY_PREFIX}")
        async with self._store.transaction() as tx:
            if raw is not None:
                if await tx.keys.by_hash(hash_key(raw)) is None:
                    await tx.keys.add(new_key(CredentialKind.ADMIN, None, self._box,
                                              self._clock.now(), raw).key)
                return None
            if await tx.keys.active(None):
                return None
            minted = new_key(CredentialKind.ADMIN, None, self._box, self._clock.now())
            await tx.keys.add(minted.key)
            return minted.raw

    def mint_user_token(self, app_id: str, user_id: str, key: ApiKey,
                        ttl_seconds: int) -> UserToken:
        check_user_id(user_id)
        if not 60 <= ttl_seconds <= MAX_TOKEN_TTL:
            raise ValidationFailed.on("ttl", f"must be between 60 and {MAX_TOKEN_TTL} seconds")
        if key.signing_secret is None:
            raise ValidationFailed.on("authorization", "only an app key can mint user tokens")
        now = self._clock.now()
        expires = now + timedelta(seconds=ttl_seconds)
        claims = {"sub": user_id, "aud": app_id, "iat": int(now.timestamp()),
                  "exp": int(expires.timestamp())}
        token = jwt.encode(claims, self._box.open(key.signing_secret), JWT_ALGORITHM,
                           headers={"kid": key.id})
        return UserToken(token, expires.replace(microsecond=0))

    # -- verifying -----------------------------------------------------------------------
    async def authenticate(self, credential: str) -> tuple[Principal, ApiKey | None]:
        if credential.startswith((ADMIN_KEY_PREFIX, APP_KEY_PREFIX)):
            key = await self._key(hash_key(credential))
            if key is None:
                raise Unauthenticated("the key is unknown or revoked")
            return Principal(key.kind, key.app_id, None, key.id), key
        return await self._user(credential), None

    async def _key(self, key_hash: str) -> ApiKey | None:
        fresh, cached = self._keys.lookup(key_hash)
        if fresh:
            return cached
        async with self._store.reader() as tx:
            key = await tx.keys.by_hash(key_hash)
        return self._keys.put(key_hash, None if key is None or key.revoked_at else key)

    async def _signing_secrets(self, app_id: str) -> list[tuple[str, str]]:
        fresh, cached = self._signers.lookup(app_id)
        if fresh and cached is not None:
            return cached
        async with self._store.reader() as tx:
            keys = await tx.keys.active(app_id)
        return self._signers.put(
            app_id, [(k.id, self._box.open(k.signing_secret)) for k in keys if k.signing_secret])

    async def _user(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the credential is neither a key nor a user token") from exc
        if header.get("alg") != JWT_ALGORITHM:
            raise Unauthenticated("user tokens are signed with HS256")
        app_id = unverified.get("aud")
        if not isinstance(app_id, str) or not APP_ID.fullmatch(app_id):
            raise Unauthenticated("the user token names no app (aud)")
        candidates = await self._signing_secrets(app_id)
        kid = header.get("kid")
        if kid is not None:
            candidates = [c for c in candidates if c[0] == kid]
        for key_id, secret in candidates:
            try:
                claims = jwt.decode(
                    token, secret, algorithms=[JWT_ALGORITHM], audience=app_id,
                    leeway=JWT_LEEWAY_SECONDS, options={"require": ["exp", "sub", "aud"]})
            except jwt.ExpiredSignatureError as exc:
                raise Unauthenticated("the user token has expired") from exc
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"the user token is invalid: {exc}") from exc
            sub = claims["sub"]
            if not isinstance(sub, str) or not is_user_id(sub):
                raise Unauthenticated("the user token's sub is not a user id")
            exp = claims["exp"]
            return Principal(CredentialKind.USER, app_id, sub, key_id,
                             float(exp) if isinstance(exp, int | float) else None)
        raise Unauthenticated("the user token's signature does not match a key of its app")
