"""The scheduler function: a minute's polling of scheduled notifications, broadcasts and app
events, cut to the time the invocation has."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from tests.aws_lambda.conftest import Context, Harness, sample
from tests.conftest import ADMIN_KEY
from tidings.domain.webhooks import iso, new_secret
from tidings.entrypoints.aws_lambda import scheduler
from tidings.entrypoints.aws_lambda.events import BadEvent
from tidings.ports import WebhookAnswer


class Hooks:
    """Takes every app event at once (or after `delay` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, url: str, secret: str, event_id: str, body: bytes) -> WebhookAnswer:
        await asyncio.sleep(self.delay)
        self.sent.append((url, body))
        return WebhookAnswer(ok=True)

    async def close(self) -> None:
        return None


def _setup(h: Harness) -> str:
    """An app with a webhook, a user with a device, one delivery sent (so one app event is
    waiting), a notification scheduled in a minute and a broadcast to everyone. Returns the
    app's key."""
    r = h.http("PUT", "/v1/apps/acme", key=ADMIN_KEY, json_body={
        "name": "Acme", "webhook": {"url": "http://127.0.0.1:9/hook", "secret": new_secret(),
                                    "events": ["delivery.sent"]}})
    assert r.status == 201, r.body
    r = h.http("POST", "/v1/apps/acme/keys", key=ADMIN_KEY)
    key = r.body["key"]
    r = h.http("POST", "/v1/users/u1/devices", key=key, json_body={"platform": "android", "token": "t"})
    assert r.status == 201, r.body
    r = h.http("POST", "/v1/notifications", key=key, json_body={"to": {"user_id": "u1"}, "title": "now"})
    assert r.status == 202, r.body
    assert h.run(h.container.dispatcher.run_once()) == 1
    at = h.clock.now() + timedelta(minutes=1)
    r = h.http("POST", "/v1/notifications", key=key, json_body={
        "to": {"user_id": "u1"}, "title": "later", "channels": ["in_app"], "send_at": iso(at)})
    assert r.status == 202 and r.body["items"][0]["status"] == "scheduled", r.body
    r = h.http("POST", "/v1/broadcasts", key=key, json_body={
        "to": {"all": True}, "title": "to all", "channels": ["in_app"]})
    assert r.status == 202, r.body
    return str(key)


def test_one_invocation_does_the_minutes_work(make_harness: Any) -> None:
    hooks = Hooks()
    h = make_harness(webhook_sender=hooks, allow_private_webhooks=True)
    key = _setup(h)
    h.clock.advance(61)
    started = time.monotonic()
    summary = scheduler.handler(sample("scheduled"), Context(remaining_ms=5_000 + 800))
    took = time.monotonic() - started
    assert 0.8 <= took < 4, took  # it polled for its budget, then stopped
    assert summary["scheduled"] == 1
    assert summary["broadcast_recipients"] == 1
    assert summary["webhook_events"] >= 1
    assert (summary["errors"], summary["housekeeping"], summary["cut_off"]) == (0, "ok", False)
    assert summary["rounds"] > 3  # it went round more than once
    assert [b for _, b in hooks.sent if b"delivery.sent" in b]
    r = h.http("GET", "/v1/users/u1/notifications", key=key, query="channel=in_app")
    assert {i["title"] for i in r.body["items"]} == {"now", "later", "to all"}


def test_without_time_left_each_loop_goes_round_once(harness: Harness) -> None:
    started = time.monotonic()
    summary = scheduler.handler(sample("scheduled"), Context(remaining_ms=4_000))
    assert time.monotonic() - started < 2
    assert summary["rounds"] == 3 and summary["errors"] == 0
    assert scheduler.budget(Context(remaining_ms=4_000))[0] == 0
    assert scheduler.budget(Context(remaining_ms=900_000))[0] == scheduler.MAX_SECONDS


def test_a_round_running_at_the_end_is_cut_off(make_harness: Any) -> None:
    hooks = Hooks(delay=30)  # a receiver that never answers in time
    h = make_harness(webhook_sender=hooks, allow_private_webhooks=True)
    _setup(h)
    started = time.monotonic()
    summary = scheduler.handler(sample("scheduled"), Context(remaining_ms=3_000))
    assert time.monotonic() - started < 2.5
    assert summary["cut_off"] is True
    assert hooks.sent == []


@pytest.mark.parametrize("event", [sample("dynamodb_stream"), {}, [],
                                   dict(sample("scheduled"), source="aws.ec2",
                                        **{"detail-type": "EC2 Instance State-change Notification"})])
def test_a_wrong_event_raises_before_anything_runs(make_harness: Any, event: Any) -> None:
    h = make_harness(webhook_sender=Hooks(), allow_private_webhooks=True)
    key = _setup(h)
    h.clock.advance(61)
    with pytest.raises(BadEvent):
        scheduler.handler(event, Context())
    r = h.http("GET", "/v1/users/u1/notifications", key=key, query="channel=in_app")
    assert {i["title"] for i in r.body["items"]} == {"now"}
