"""The settings each provider takes (API.md, Apps), checked before they are sealed and stored.

Secrets are write-only: these models only ever validate input; nothing renders them back.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from ...domain.webhooks import is_secret

HttpEndpoint = Field(None, pattern=r"^https?://[^\s]+$", max_length=2048)

# SNS topics whose messages the app's receipt callback accepts (SES events, SMS status); when
# set, a signed message from any other topic is refused.
TopicArn = Annotated[str, StringConstraints(
    pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")]
TopicArns = Field(None, max_length=20)
PLATFORM_APPLICATION_ARN = re.compile(
    r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:app/(GCM|APNS|APNS_SANDBOX|ADM|BAIDU|MPNS|WNS)/[\w.-]{1,256}")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServiceAccount(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["service_account"]
    project_id: str = Field(min_length=1)
    private_key: str = Field(min_length=1)
    client_email: str = Field(min_length=3)
    token_uri: str = Field("https://oauth2.googleapis.com/token", pattern=r"^https?://[^\s]+$")

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: str) -> str:
        return _private_key(value, rsa.RSAPrivateKey, "the service account's RSA private key")


class FcmSettings(_Settings):
    credentials: ServiceAccount
    endpoint: str | None = HttpEndpoint

    @field_validator("credentials", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


def _private_key(value: str, kind: type[Any], what: str) -> str:
    """The PEM must load, and be the kind of key the provider signs with."""
    try:
        key = serialization.load_pem_private_key(value.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"must be {what} (PEM); this one does not load") from None
    if not isinstance(key, kind):
        raise ValueError(f"must be {what}, not a {type(key).__name__.lstrip('_')}")
    return value


class ApnsSettings(_Settings):
    team_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    key_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    private_key: str = Field(min_length=1)
    topic: str = Field(min_length=1, max_length=255)
    environment: Literal["production", "sandbox"] = "production"
    endpoint: str | None = HttpEndpoint

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: str) -> str:
        return _private_key(value, ec.EllipticCurvePrivateKey, "the .p8 EC P-256 signing key")


class WebPushSettings(_Settings):
    vapid_private_key: str = Field(min_length=1)
    vapid_subject: str = Field(pattern=r"^(mailto:|https://)[^\s]+$")
    endpoint: str | None = HttpEndpoint

    @field_validator("vapid_private_key")
    @classmethod
    def _p256(cls, value: str) -> str:
        from ...adapters.providers.webpush import load_vapid_key

        try:
            load_vapid_key(value)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("must be a P-256 private key: PEM, or the 32-byte key in "
                             "base64url") from None
        return value


class SnsSettings(_Settings):
    receipt_topic_arns: list[TopicArn] | None = TopicArns
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    platform_applications: dict[str, str] = Field(default_factory=dict)
    endpoint_url: str | None = HttpEndpoint
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @field_validator("platform_applications")
    @classmethod
    def _arns(cls, value: dict[str, str]) -> dict[str, str]:
        for platform, arn in value.items():
            if not PLATFORM_APPLICATION_ARN.fullmatch(arn):
                raise ValueError(f"{platform}: must be a platform application ARN "
                                 "(arn:aws:sns:<region>:<account>:app/<GCM|APNS|…>/<name>)")
        return value


class SesSettings(_Settings):
    receipt_topic_arns: list[TopicArn] | None = TopicArns
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    from_: str = Field(alias="from", min_length=3, max_length=320)
    endpoint_url: str | None = HttpEndpoint
    access_key_id: str | None = None
    secret_access_key: str | None = None


class SmtpSettings(_Settings):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    starttls: bool = True
    tls: bool = False
    from_: str = Field(alias="from", min_length=3, max_length=320)


class TwilioSettings(_Settings):
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=1, max_length=64)
    endpoint: str | None = HttpEndpoint


class WebhookSettings(_Settings):
    url: str | None = HttpEndpoint
    secret: str = Field(description="whsec_…: signs every POST (Standard Webhooks)")

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str) -> str:
        if not is_secret(value):
            raise ValueError("must be 'whsec_' followed by the base64 of 24 to 64 random bytes "
                             "(e.g. \"whsec_\" + base64 of 32 bytes from a secure generator)")
        return value


class LogSettings(_Settings):
    pass


SETTINGS: dict[str, type[BaseModel]] = {
    "fcm": FcmSettings, "apns": ApnsSettings, "webpush": WebPushSettings, "sns": SnsSettings,
    "ses": SesSettings, "smtp": SmtpSettings, "twilio": TwilioSettings,
    "webhook": WebhookSettings, "log": LogSettings,
}
PROVIDER_NAMES = tuple(SETTINGS)


def check_provider_settings(name: str, config: dict[str, Any]) -> dict[str, Any]:
    model = SETTINGS.get(name)
    if model is None:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
    try:
        parsed = model.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{name}.{where}: {first['msg']}") from None
    return parsed.model_dump(by_alias=True, exclude_none=True)
