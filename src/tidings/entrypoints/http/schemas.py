"""Request and response bodies of API.md, validated by pydantic. Strict: unknown fields are
refused, so a typo is a 422 rather than a silently ignored setting."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    create_model,
    field_validator,
    model_validator,
)

from ...domain import validation as v
from ...domain.notifications import Channel
from ...domain.topics import TOPIC_KEY
from ...domain.webhooks import is_secret
from .providers import check_provider_settings

MAX_DATA_BYTES = 8 * 1024
MAX_ATTRIBUTES_BYTES = 16 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _e164(value: str) -> str:
    if not v.is_e164(value):
        raise ValueError("must be an E.164 phone number such as +393331234567")
    return value


def _email(value: str) -> str:
    if not v.is_email(value):
        raise ValueError("must be an e-mail address such as ada@example.com")
    return value


def _timezone(value: str) -> str:
    if not v.is_timezone(value):
        raise ValueError("must be an IANA time zone such as Europe/Rome")
    return value


def _locale(value: str) -> str:
    if not v.is_locale(value):
        raise ValueError("must be a BCP 47 locale such as it-IT")
    return value


def _user_id(value: str) -> str:
    if not v.is_user_id(value):
        raise ValueError("must be 1-256 printable characters")
    return value


def _json_size(limit: int) -> Any:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"holds a value JSON cannot carry faithfully: {exc}") from None
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes as JSON")
        return value
    return check


Phone = Annotated[str, AfterValidator(_e164)]
Email = Annotated[str, AfterValidator(_email)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Locale = Annotated[str, AfterValidator(_locale)]
UserId = Annotated[str, AfterValidator(_user_id)]
ProviderName = Literal["fcm", "apns", "webpush", "sns", "ses", "smtp", "twilio", "webhook", "log"]
Platform = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Ulid = Annotated[str, StringConstraints(pattern=r"^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
Category = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
WebhookEvent = Literal["delivery.sent", "delivery.delivered", "delivery.failed",
                       "delivery.skipped", "notification.read", "notification.read_all"]


# --- apps -----------------------------------------------------------------------------------
class Webhook(Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/$.?#][^\s]*$", max_length=2048)]
    events: list[WebhookEvent] = Field(default_factory=lambda: list(WebhookEvent.__args__))  # type: ignore[attr-defined]
    secret: str | None = Field(None, description="whsec_…; made for the app when not given")

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        if value is not None and not is_secret(value):
            raise ValueError("must be 'whsec_' followed by the base64 of 24 to 64 random bytes")
        return value


HourMinute = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class QuietHours(Strict):
    """Push and SMS (by default) that fall in [start, end) local time wait for the end; the
    window may wrap midnight. A `priority: "high"` send goes anyway."""

    start: HourMinute
    end: HourMinute

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class AppDefaults(Strict):
    timezone: TimeZone | None = Field(
        None, description="for `send_at.local_time` and quiet hours, when a user has none")
    channels: list[Channel] | None = Field(None, min_length=1)
    ttl: int | None = Field(None, ge=0, le=2_419_200)
    priority: Literal["high", "normal"] | None = None
    quiet_hours: QuietHours | None = Field(None, description="every user's, unless their own")
    quiet_hours_channels: list[Literal["push", "sms", "email"]] | None = Field(
        None, max_length=3, description="what quiet hours hold back (default push and sms); "
        "in-app notices are never held: they wait in the inbox without a sound")
    mandatory_categories: list[Category] | None = Field(
        None, max_length=100, description="categories users cannot opt out of (security alerts)")


class AppPut(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    providers: dict[str, dict[str, Any] | None] | None = Field(
        None, description="Settings per provider (write-only). Named providers are replaced, "
        "null removes one, providers not named are kept.")
    routing: dict[Literal["push", "sms", "email"], ProviderName | dict[Platform, ProviderName]] | None = None
    defaults: AppDefaults | None = None
    webhook: Webhook | None = None

    @field_validator("providers")
    @classmethod
    def _providers(cls, value: dict[str, dict[str, Any] | None] | None) -> Any:
        if value is None:
            return value
        return {name: None if cfg is None else check_provider_settings(name, cfg)
                for name, cfg in value.items()}


class AppOut(BaseModel):
    id: str
    name: str
    providers: list[str] = Field(description="which providers have settings (never the secrets)")
    routing: dict[str, Any]
    defaults: dict[str, Any]
    webhook: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class KeyOut(BaseModel):
    id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="the secret key, shown this once")
    signing_secret: str = Field(description="signs user tokens (HS256), shown this once")


# --- users ----------------------------------------------------------------------------------
class UserPut(Strict):
    email: Email | None = None
    phone: Phone | None = None
    timezone: TimeZone | None = None
    locale: Locale | None = None
    attributes: Annotated[dict[str, Any], AfterValidator(_json_size(MAX_ATTRIBUTES_BYTES))] | None = None
    quiet_hours: QuietHours | None = None

    @field_validator("attributes")
    @classmethod
    def _keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in value or {}:
            if not v.ATTRIBUTE_KEY.fullmatch(key):
                raise ValueError(f"attribute name {key!r} must match [A-Za-z0-9_][A-Za-z0-9_-]{{0,63}}")
        return value


class UserOut(BaseModel):
    id: str
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    attributes: dict[str, Any]
    quiet_hours: QuietHours | None = None
    created_at: datetime
    updated_at: datetime


class TokenRequest(Strict):
    ttl: int | None = Field(None, ge=60, le=30 * 24 * 3600, description="seconds")


class TokenOut(BaseModel):
    token: str
    expires_at: datetime


# --- devices --------------------------------------------------------------------------------
class WebPushKeys(Strict):
    p256dh: str = Field(min_length=16, max_length=200)
    auth: str = Field(min_length=8, max_length=100)


class WebPushSubscription(BaseModel):
    model_config = ConfigDict(extra="ignore")
    endpoint: Annotated[str, StringConstraints(pattern=r"^https://[^\s]+$", max_length=2048)]
    keys: WebPushKeys
    expirationTime: int | None = None


ProviderToken = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\s]+$")]


class DeviceRegister(Strict):
    """`platform: "webhook"` with an http(s) URL as the token makes a device the `webhook`
    provider POSTs to."""

    platform: Platform
    token: ProviderToken | WebPushSubscription
    provider: ProviderName | None = None
    device_info: str | None = Field(None, max_length=512)
    app_version: str | None = Field(None, max_length=64)
    device_id: Ulid | None = None

    @model_validator(mode="after")
    def _subscription_is_web(self) -> DeviceRegister:
        if isinstance(self.token, WebPushSubscription) and self.platform != "web":
            raise ValueError("a Web Push subscription object is for platform 'web'")
        return self


class DeviceOut(BaseModel):
    id: str
    user_id: str
    platform: str
    provider: str | None
    enabled: bool
    disabled_reason: str | None = None
    device_info: str | None
    app_version: str | None
    created_at: datetime
    last_seen_at: datetime


# --- notifications --------------------------------------------------------------------------
class To(Strict):
    user_id: UserId | None = None
    user_ids: list[UserId] | None = Field(None, min_length=1, max_length=1000)
    phone: Phone | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> To:
        given = [k for k in ("user_id", "user_ids", "phone", "email") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of user_id, user_ids, phone, email")
        return self


class LocalTime(Strict):
    local_time: Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class Overrides(Strict):
    """Per-platform push fields merged over what Tidings builds, shaped like FCM's message:
    `android` (FCM AndroidConfig), `apns` (`{"headers": {...}, "payload": {...}}`, for APNs and
    FCM's apns block), `webpush` (`{"headers": {...}, "notification": {...}}`)."""

    android: Annotated[dict[str, Any], AfterValidator(_json_size(4096))] | None = None
    apns: Annotated[dict[str, Any], AfterValidator(_json_size(4096))] | None = None
    webpush: Annotated[dict[str, Any], AfterValidator(_json_size(4096))] | None = None


class MessageFields(Strict):
    """What is sent: the same for every recipient of a send or a broadcast."""

    channels: list[Channel] | None = Field(None, min_length=1, max_length=4)
    title: str | None = Field(None, max_length=1024)
    body: str | None = Field(None, max_length=16 * 1024)
    data: Annotated[dict[str, Any], AfterValidator(_json_size(MAX_DATA_BYTES))] = Field(default_factory=dict)
    category: Category | None = None
    send_at: datetime | LocalTime | None = None
    ttl: int | None = Field(None, ge=0, le=2_419_200, description="seconds")
    priority: Literal["high", "normal"] | None = None
    sender_id: str | None = Field(None, min_length=1, max_length=256)
    html: str | None = Field(None, max_length=512 * 1024, description="e-mail: the HTML part")
    collapse_key: str | None = Field(
        None, min_length=1, max_length=64,
        description="a newer push with the same key replaces an older one not yet shown")
    overrides: Overrides | None = None

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[Channel] | None) -> list[Channel] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each channel at most once")
        return value

    @model_validator(mode="after")
    def _has_content(self) -> MessageFields:
        if not (self.title or self.body or self.data):
            raise ValueError("a notification needs a title, a body or data")
        return self


class NotificationCreate(MessageFields):
    to: To


class BroadcastTo(Strict):
    topic: str | None = Field(None, description="the subscribers of this topic")
    segment: dict[str, Any] | None = Field(
        None, description="the users this filter selects (as `GET /v1/users?filter=`)")
    all: StrictBool | None = Field(None, description="`true`: every user of the app")

    @model_validator(mode="after")
    def _exactly_one(self) -> BroadcastTo:
        given = [k for k in ("topic", "segment", "all") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of topic, segment, all")
        if self.all is False:
            raise ValueError("all: only true (every user) makes sense here")
        if self.topic is not None and not TOPIC_KEY.fullmatch(self.topic):
            raise ValueError("topic: 1-128 letters, digits and _ . : -, starting with a "
                             "letter or digit")
        return self


class BroadcastCreate(MessageFields):
    to: BroadcastTo


class BroadcastOut(BaseModel):
    id: str
    status: Literal["scheduled", "queued", "expanding", "completed", "canceled", "failed"]
    to: dict[str, Any]
    recipients: int | None = Field(description="known once the expansion starts; exact at the end")
    expanded: int = Field(description="recipients whose notification is written")
    scheduled: int
    queued: int
    sent: int
    failed: int
    canceled: int
    statuses: dict[str, int] = Field(description="the broadcast's notifications by status")
    send_at: datetime | None
    local_time: str | None
    title: str | None = None
    body: str | None = None
    category: str | None = None
    channels: list[str]
    created_at: datetime
    updated_at: datetime


class CategoryPreference(Strict):
    enabled: StrictBool | None = None
    channels: dict[Channel, StrictBool] = Field(default_factory=dict)


class PreferencesDoc(Strict):
    """A channel set to false is opted out of for every category (but mandatory ones), unless
    a category sets that channel to true itself; a category with `enabled: false` is opted out
    of on every channel."""

    channels: dict[Channel, StrictBool] = Field(default_factory=dict)
    categories: dict[Category, CategoryPreference] = Field(default_factory=dict, max_length=200)


class PreferencesOut(PreferencesDoc):
    mandatory_categories: list[str] = Field(default_factory=list)


class DeliveryOut(BaseModel):
    id: str
    channel: str
    provider: str
    target: str | None
    status: Literal["pending", "sending", "sent", "delivered", "failed", "skipped"]
    attempts: int
    error: str | None
    provider_message_id: str | None
    updated_at: datetime


class NotificationOut(BaseModel):
    id: str
    user_id: str | None
    to: dict[str, str]
    channels: list[str]
    title: str | None
    body: str | None
    data: dict[str, Any]
    category: str | None
    created_at: datetime
    send_at: datetime | None
    status: Literal["scheduled", "queued", "sent", "partially_failed", "failed", "canceled"]
    read_at: datetime | None
    sender_id: str | None
    ttl: int | None = None
    priority: str = "normal"
    deliveries: list[DeliveryOut]


class Items(BaseModel):
    items: list[NotificationOut]


class ReadAll(Strict):
    channel: Channel | None = None
    until: datetime | None = None


class Updated(BaseModel):
    updated: int


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def page_of(item: type[BaseModel], name: str, extra: dict[str, Any] | None = None) -> Any:
    fields: dict[str, Any] = {"items": (list[item], ...), "next_cursor": (str | None, None)}  # type: ignore[valid-type]
    fields.update(extra or {})
    return create_model(name, **fields)


AppPage = page_of(AppOut, "AppPage")
KeyPage = page_of(KeyOut, "KeyPage")
UserPage = page_of(UserOut, "UserPage", {"total": (int | None, None)})
DevicePage = page_of(DeviceOut, "DevicePage")
NotificationPage = page_of(NotificationOut, "NotificationPage")
BroadcastPage = page_of(BroadcastOut, "BroadcastPage")
class InboxItem(NotificationOut):
    deliveries: list[DeliveryOut] | None = Field(  # type: ignore[assignment]
        None, description="only with `include=deliveries`")


InboxPage = page_of(InboxItem, "InboxPage", {"unread_count": (int, ...)})
