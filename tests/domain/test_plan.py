"""`plan_notification`: one notification per recipient, one delivery per target."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidings.domain.apps import App, route
from tidings.domain.devices import Device, token_key
from tidings.domain.ids import is_ulid, timestamp_ms
from tidings.domain.notifications import DeliveryStatus, Message, NotificationStatus
from tidings.domain.planning import Recipient, plan_notification

NOW = datetime(2026, 11, 21, 9, 3, 47, 15000, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
ROUTING = {"push": {"android": "fcm", "ios": "apns", "web": "webpush"}, "sms": "twilio",
           "email": "ses"}


def app(routing=None) -> App:
    return App(id="acme", name="Acme", routing=ROUTING if routing is None else routing)


def device(id: str, platform: str = "android", enabled: bool = True,
           provider: str | None = None, user_id: str = "u1") -> Device:
    return Device(id=id, app_id="acme", user_id=user_id, platform=platform, token=f"tok-{id}",
                  token_key=token_key(f"tok-{id}"), provider=provider, enabled=enabled,
                  device_info=None, app_version=None, created_at=NOW, last_seen_at=NOW,
                  disabled_reason=None if enabled else "Unregistered")


def plan(recipient: Recipient, *channels: str, a: App | None = None):
    return plan_notification(a or app(), recipient, Message(channels=channels, title="Hi"), NOW)


def test_push_plans_one_pending_delivery_per_enabled_device():
    r = Recipient(user_id="u1", devices=(
        device("D1", "android"), device("D2", "ios"), device("D3", "web"),
        device("D4", "android", enabled=False)))
    n = plan(r, "push")
    assert [(d.target, d.provider, d.status) for d in n.deliveries] == [
        ("D1", "fcm", "pending"), ("D2", "apns", "pending"), ("D3", "webpush", "pending")]
    for d in n.deliveries:
        assert d.channel == "push" and d.attempts == 0 and d.error is None
        assert d.due_at == NOW  # due at once
        assert d.notification_id == n.id and d.app_id == "acme" and d.user_id == "u1"
    assert n.status is NotificationStatus.QUEUED


def test_a_device_registered_with_a_provider_keeps_it():
    n = plan(Recipient(user_id="u1", devices=(device("D1", "android", provider="sns"),)), "push")
    assert [d.provider for d in n.deliveries] == ["sns"]


@pytest.mark.parametrize("devices", [(), (device("D1", enabled=False), device("D2", enabled=False))])
def test_push_without_an_enabled_device_is_one_skipped_delivery_with_a_reason(devices):
    n = plan(Recipient(user_id="u1", devices=devices), "push")
    assert len(n.deliveries) == 1
    d = n.deliveries[0]
    assert d.status == DeliveryStatus.SKIPPED and d.target is None and d.due_at is None
    assert d.error == "no enabled device"
    assert n.status is NotificationStatus.FAILED


def test_in_app_is_sent_when_stored():
    n = plan(Recipient(user_id="u1"), "in_app")
    (d,) = n.deliveries
    assert (d.channel, d.provider, d.target, d.status) == ("in_app", "inbox", "u1", "sent")
    assert d.due_at is None
    assert n.status is NotificationStatus.SENT


def test_sms_goes_to_the_users_phone():
    n = plan(Recipient(user_id="u1", phone="+393331234567"), "sms")
    (d,) = n.deliveries
    assert (d.provider, d.target, d.status) == ("twilio", "+393331234567", "pending")


def test_sms_without_a_phone_is_skipped_with_a_reason():
    (d,) = plan(Recipient(user_id="u1", email="ada@example.com"), "sms").deliveries
    assert d.status == "skipped" and d.error == "no phone number" and d.target is None


def test_email_goes_to_the_users_address():
    (d,) = plan(Recipient(user_id="u1", email="ada@example.com"), "email").deliveries
    assert (d.provider, d.target, d.status) == ("ses", "ada@example.com", "pending")


def test_email_without_an_address_is_skipped_with_a_reason():
    (d,) = plan(Recipient(user_id="u1", phone="+393331234567"), "email").deliveries
    assert d.status == "skipped" and d.error == "no email address" and d.target is None


def test_every_channel_at_once_in_the_order_asked():
    r = Recipient(user_id="u1", phone="+393331234567", devices=(device("D1", "ios"),))
    n = plan(r, "push", "in_app", "sms", "email")
    assert [(d.channel, d.status) for d in n.deliveries] == [
        ("push", "pending"), ("in_app", "sent"), ("sms", "pending"), ("email", "skipped")]
    assert n.status is NotificationStatus.QUEUED
    assert n.channels == ["push", "in_app", "sms", "email"]


def test_ids_carry_the_creation_time_and_are_distinct():
    r = Recipient(user_id="u1", devices=(device("D1"), device("D2")))
    n = plan(r, "push", "in_app")
    ids = [n.id] + [d.id for d in n.deliveries]
    assert all(is_ulid(i) and timestamp_ms(i) == NOW_MS for i in ids)
    assert len(set(ids)) == len(ids)
    assert n.created_at == NOW and n.send_at is None and n.read_at is None


def test_the_notification_carries_the_message():
    message = Message(channels=("in_app",), title="T", body="B", data={"k": 1}, category="billing",
                      ttl=60, priority="high", sender_id="s1")
    n = plan_notification(app(), Recipient(user_id="u1"), message, NOW)
    assert (n.title, n.body, n.data, n.category, n.ttl, n.priority, n.sender_id) == (
        "T", "B", {"k": 1}, "billing", 60, "high", "s1")
    assert n.to == {"user_id": "u1"} and n.to_address is None and n.user_id == "u1"
    assert n.data is not message.data  # a copy: the request's dict is not shared


def test_a_raw_phone_recipient():
    n = plan(Recipient(phone="+393331234567"), "sms")
    assert n.user_id is None and n.to == {"phone": "+393331234567"}
    assert n.to_address == "+393331234567"
    assert [d.user_id for d in n.deliveries] == [None]


def test_a_raw_email_recipient():
    n = plan(Recipient(email="ada@example.com"), "email")
    assert n.to == {"email": "ada@example.com"} and n.to_address == "ada@example.com"


def test_an_app_without_routing_sends_through_the_log_provider():
    r = Recipient(user_id="u1", phone="+393331234567", email="ada@example.com",
                  devices=(device("D1", "ios"),))
    n = plan(r, "push", "sms", "email", a=app(routing={}))
    assert [d.provider for d in n.deliveries] == ["log", "log", "log"]


# --- routing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("channel, platform, expected", [
    ("push", "android", "fcm"),
    ("push", "ios", "apns"),
    ("push", "web", "webpush"),
    ("push", "huawei", "log"),  # not routed
    ("push", None, "log"),
    ("sms", None, "twilio"),
    ("email", None, "ses"),
    ("in_app", None, "inbox"),
    ("in_app", "ios", "inbox"),
])
def test_route_picks_the_provider_per_channel_and_platform(channel, platform, expected):
    assert route(app(), channel, platform) == expected


def test_route_honours_a_default_platform_entry():
    a = app(routing={"push": {"ios": "apns", "default": "fcm"}})
    assert route(a, "push", "ios") == "apns"
    assert route(a, "push", "android") == "fcm"
    assert route(a, "push", None) == "fcm"


def test_route_takes_one_provider_for_a_whole_channel():
    a = app(routing={"push": "sns"})
    assert route(a, "push", "ios") == route(a, "push", "android") == "sns"


def test_route_falls_back_to_log_for_unrouted_channels():
    assert route(app(routing={}), "sms") == "log"
    assert route(app(routing={"push": {"ios": "apns"}}), "email") == "log"


def test_skipped_push_is_attributed_to_the_channels_default_route():
    a = app(routing={"push": {"default": "fcm"}})
    (d,) = plan(Recipient(user_id="u1"), "push", a=a).deliveries
    assert d.provider == "fcm" and d.status == "skipped"
