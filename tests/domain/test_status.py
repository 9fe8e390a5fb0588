"""A notification's status follows from its deliveries' statuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidings.domain.notifications import Delivery, DeliveryStatus, NotificationStatus, derive_status

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def delivery(status: str) -> Delivery:
    return Delivery(id="d", notification_id="n", app_id="acme", user_id="u1", channel="push",
                    provider="log", target="dev", status=status, attempts=0, error=None,
                    provider_message_id=None, created_at=NOW, updated_at=NOW, due_at=None)


@pytest.mark.parametrize("statuses", [
    ["pending"], ["sending"], ["sent", "pending"], ["failed", "sending"], ["skipped", "pending"],
    ["delivered", "failed", "pending"],
])
def test_queued_while_any_delivery_is_pending_or_sending(statuses):
    assert derive_status(statuses) is NotificationStatus.QUEUED


@pytest.mark.parametrize("statuses", [["sent"], ["delivered"], ["sent", "delivered"]])
def test_sent_when_every_attempted_delivery_succeeded(statuses):
    assert derive_status(statuses) is NotificationStatus.SENT


@pytest.mark.parametrize("statuses", [["failed"], ["failed", "failed"]])
def test_failed_when_every_attempted_delivery_failed(statuses):
    assert derive_status(statuses) is NotificationStatus.FAILED


@pytest.mark.parametrize("statuses", [["sent", "failed"], ["delivered", "failed", "failed"]])
def test_partially_failed_when_some_succeeded_and_some_failed(statuses):
    assert derive_status(statuses) is NotificationStatus.PARTIALLY_FAILED


@pytest.mark.parametrize("statuses, expected", [
    (["sent", "skipped"], NotificationStatus.SENT),
    (["failed", "skipped"], NotificationStatus.FAILED),
    (["sent", "failed", "skipped"], NotificationStatus.PARTIALLY_FAILED),
    (["pending", "skipped"], NotificationStatus.QUEUED),
])
def test_skipped_deliveries_neither_help_nor_hurt(statuses, expected):
    assert derive_status(statuses) is expected


@pytest.mark.parametrize("statuses", [["skipped"], ["skipped", "skipped", "skipped"]])
def test_all_skipped_is_failed_since_nothing_reached_the_recipient(statuses):
    assert derive_status(statuses) is NotificationStatus.FAILED


def test_accepts_delivery_objects_and_enum_members_alike():
    assert derive_status([delivery("sent"), delivery("failed")]) is NotificationStatus.PARTIALLY_FAILED
    assert derive_status([DeliveryStatus.SENDING]) is NotificationStatus.QUEUED
    assert derive_status([delivery(DeliveryStatus.SENT)]) is NotificationStatus.SENT
