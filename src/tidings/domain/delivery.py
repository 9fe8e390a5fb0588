"""The delivery state machine: what a provider said, and what happens to the delivery next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .notifications import DeliveryStatus
from .retry import RetryPolicy


@dataclass(frozen=True)
class Sent:
    message_id: str | None = None
    # What the provider knows the target by, to be kept with the device (an SNS endpoint ARN).
    target_ref: str | None = None


@dataclass(frozen=True)
class Retry:
    reason: str
    after: float | None = None  # seconds, from the provider's Retry-After


@dataclass(frozen=True)
class TargetInvalid:
    """The token or address is gone for good: the device is disabled, nothing is retried."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """Sending this message can never work (a payload the provider rejects)."""

    reason: str


SendResult = Sent | Retry | TargetInvalid | Failed


@dataclass(frozen=True)
class OutboundMessage:
    """One delivery as a provider sees it."""

    delivery_id: str
    notification_id: str
    app_id: str
    user_id: str | None
    channel: str
    provider: str
    target: str  # device token / subscription JSON, phone or e-mail address
    platform: str | None
    title: str | None
    body: str | None
    data: dict[str, Any] = field(default_factory=dict)
    category: str | None = None
    ttl: int | None = None
    priority: str = "normal"
    attempt: int = 1
    device_id: str | None = None
    html: str | None = None  # e-mail only: the HTML alternative to `body`
    collapse_key: str | None = None  # a newer message with the same key replaces an older one
    # Per-platform overrides, shaped like FCM's message fields: {"android": {...},
    # "apns": {"headers": {...}, "payload": {...}}, "webpush": {"headers": {...}, ...}}.
    overrides: dict[str, Any] = field(default_factory=dict)
    target_ref: str | None = None  # what the provider said it knows this device by (Sent.target_ref)


@dataclass(frozen=True)
class Claim:
    """A delivery a worker holds under lease `lease_id` until `lease_until`."""

    delivery_id: str
    notification_id: str
    app_id: str
    provider: str
    attempts: int
    lease_id: str
    message: OutboundMessage | None  # None: its target vanished since it was queued


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    notification_id: str
    lease_id: str
    status: DeliveryStatus
    at: datetime
    due_at: datetime | None  # set when the delivery goes back to the queue
    error: str | None = None
    provider_message_id: str | None = None
    disable_device: str | None = None  # device id the provider said is gone
    disable_reason: str | None = None
    device_ref: tuple[str, str] | None = None  # (device id, provider's reference) to keep


def decide(claim: Claim, result: SendResult, policy: RetryPolicy, now: datetime,
           jitter: float | None = None) -> Outcome:
    """Map a provider's answer onto the delivery's next state."""

    def outcome(status: DeliveryStatus, error: str | None = None, **extra: Any) -> Outcome:
        return Outcome(claim.delivery_id, claim.notification_id, claim.lease_id, status, now,
                       extra.pop("due_at", None), error=error, **extra)

    match result:
        case Sent(message_id=mid, target_ref=ref):
            msg, keep = claim.message, None
            if msg is not None and msg.device_id and ref and ref != msg.target_ref:
                keep = (msg.device_id, ref)
            return outcome(DeliveryStatus.SENT, provider_message_id=mid, device_ref=keep)
        case TargetInvalid(reason=reason):
            device = claim.message.device_id if claim.message else None
            return outcome(DeliveryStatus.FAILED, f"target invalid: {reason}",
                           disable_device=device, disable_reason=reason)
        case Failed(reason=reason):
            return outcome(DeliveryStatus.FAILED, reason)
        case Retry(reason=reason, after=after):
            if policy.exhausted(claim.attempts):
                return outcome(DeliveryStatus.FAILED,
                               f"gave up after {claim.attempts} attempts: {reason}")
            delay = policy.delay(claim.attempts, after) if jitter is None else jitter
            return outcome(DeliveryStatus.PENDING, reason, due_at=now + timedelta(seconds=delay))
    raise TypeError(f"not a send result: {result!r}")
