"""Apps, their credentials, and which provider serves which channel and platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

ADMIN_KEY_PREFIX = "tda_"
APP_KEY_PREFIX = "tds_"
DEFAULT_PROVIDER = "log"
IN_APP_PROVIDER = "inbox"


class CredentialKind(StrEnum):
    ADMIN = "admin"
    APP = "app"
    USER = "user"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the operator, an app's backend, or one user of one app."""

    kind: CredentialKind
    app_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    expires_at: float | None = None  # a user token's `exp` (seconds since the epoch)

    @property
    def is_admin(self) -> bool:
        return self.kind is CredentialKind.ADMIN


@dataclass
class App:
    id: str
    name: str
    routing: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    webhook: dict[str, Any] | None = None
    providers_secret: str | None = None  # the encrypted provider settings, opaque here
    provider_names: list[str] = field(default_factory=list)
    webhook_secret: str | None = None  # encrypted; signs the app's outgoing events
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class ApiKey:
    id: str
    kind: CredentialKind
    app_id: str | None
    prefix: str
    key_hash: str
    signing_secret: str | None  # encrypted; only app keys have one
    created_at: datetime
    revoked_at: datetime | None = None


def route(app: App, channel: str, platform: str | None = None) -> str:
    """The provider name that serves `channel` (and `platform`, for push) for this app.

    Routing may name a provider per platform (`{"push": {"ios": "apns"}}`), one provider for the
    whole channel (`{"sms": "twilio"}`) or a `default` platform entry; whatever is not routed
    goes to the `log` provider, so that a fresh app works before anything is configured.
    """
    if channel == "in_app":
        return IN_APP_PROVIDER
    rule = app.routing.get(channel)
    if isinstance(rule, str):
        return rule
    if isinstance(rule, dict):
        chosen = rule.get(platform or "") or rule.get("default")
        if isinstance(chosen, str):
            return chosen
    return DEFAULT_PROVIDER
