"""`decide`: what a provider answered, mapped onto the delivery's next state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tidings.domain.delivery import (
    Claim,
    Failed,
    OutboundMessage,
    Retry,
    Sent,
    TargetInvalid,
    decide,
)
from tidings.domain.notifications import DeliveryStatus
from tidings.domain.retry import RetryPolicy

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, base_seconds=2.0, cap_seconds=60.0)


def claim(attempts: int = 1, device_id: str | None = "01M7Y6Y2327WN1CRD5G5K9FTWM",
          with_message: bool = True) -> Claim:
    message = OutboundMessage(
        delivery_id="D1", notification_id="N1", app_id="acme", user_id="u1", channel="push",
        provider="fcm", target="tok", platform="android", title="Hi", body=None,
        attempt=attempts, device_id=device_id)
    return Claim(delivery_id="D1", notification_id="N1", app_id="acme", provider="fcm",
                 attempts=attempts, lease_id="L1", message=message if with_message else None)


def test_sent_is_final_with_the_providers_message_id():
    out = decide(claim(), Sent("msg-1"), POLICY, NOW)
    assert out.status is DeliveryStatus.SENT
    assert out.provider_message_id == "msg-1"
    assert out.due_at is None and out.error is None and out.disable_device is None
    assert (out.delivery_id, out.notification_id, out.lease_id, out.at) == ("D1", "N1", "L1", NOW)


def test_retry_goes_back_to_the_queue_after_the_back_off():
    out = decide(claim(attempts=1), Retry("503 from provider"), POLICY, NOW)
    assert out.status is DeliveryStatus.PENDING
    assert out.error == "503 from provider"
    assert out.due_at is not None
    assert NOW + timedelta(seconds=1) <= out.due_at <= NOW + timedelta(seconds=2)
    assert out.disable_device is None


def test_retry_waits_as_long_as_the_provider_asked():
    out = decide(claim(attempts=2), Retry("throttled", after=30.0), POLICY, NOW)
    assert out.status is DeliveryStatus.PENDING
    assert out.due_at == NOW + timedelta(seconds=30)


def test_retry_with_a_fixed_jitter_uses_it():
    out = decide(claim(attempts=1), Retry("timeout"), POLICY, NOW, jitter=5.0)
    assert out.due_at == NOW + timedelta(seconds=5)


@pytest.mark.parametrize("attempts", [3, 4])
def test_retry_gives_up_at_max_attempts(attempts):
    out = decide(claim(attempts=attempts), Retry("503"), POLICY, NOW)
    assert out.status is DeliveryStatus.FAILED
    assert out.due_at is None
    assert out.error is not None and "gave up" in out.error and "503" in out.error


def test_the_last_attempt_before_max_is_still_retried():
    out = decide(claim(attempts=2), Retry("503"), POLICY, NOW)
    assert out.status is DeliveryStatus.PENDING


def test_target_invalid_fails_and_disables_the_device():
    out = decide(claim(attempts=1), TargetInvalid("Unregistered"), POLICY, NOW)
    assert out.status is DeliveryStatus.FAILED
    assert out.due_at is None  # never retried
    assert out.disable_device == "01M7Y6Y2327WN1CRD5G5K9FTWM"
    assert out.disable_reason == "Unregistered"
    assert out.error is not None and "Unregistered" in out.error


def test_target_invalid_without_a_device_disables_nothing():
    sms = decide(claim(device_id=None), TargetInvalid("not a mobile number"), POLICY, NOW)
    assert sms.status is DeliveryStatus.FAILED and sms.disable_device is None
    vanished = decide(claim(with_message=False), TargetInvalid("gone"), POLICY, NOW)
    assert vanished.status is DeliveryStatus.FAILED and vanished.disable_device is None


def test_failed_is_final_and_keeps_the_device():
    out = decide(claim(), Failed("payload too large for APNs"), POLICY, NOW)
    assert out.status is DeliveryStatus.FAILED
    assert out.error == "payload too large for APNs"
    assert out.due_at is None and out.disable_device is None


def test_anything_else_is_a_type_error():
    with pytest.raises(TypeError):
        decide(claim(), "ok", POLICY, NOW)  # type: ignore[arg-type]
