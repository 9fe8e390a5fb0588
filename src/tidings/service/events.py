"""Outgoing app events: written to the outbox in the transaction of the change they report, then
POSTed to the app's webhook (signed per Standard Webhooks) by the worker, with retries on the
outbox's own schedule."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from ..domain.apps import App
from ..domain.delivery import Claim, Outcome
from ..domain.errors import NotFound
from ..domain.events import AppEvent, EventOutcome, after_attempt, wants
from ..domain.ids import new_id
from ..domain.webhooks import event as envelope
from ..ports import Clock, Store, Tx, WebhookSender
from .apps import Apps
from .polling import Chore, poll
from .secrets import SecretBox

log = logging.getLogger("tidings.webhooks")

MESSAGE_ID_PREFIX = "msg_"


class Events:
    """Builds the events an app asked for; the caller adds them in its own transaction."""

    def __init__(self, apps: Apps, clock: Clock) -> None:
        self._apps = apps
        self._clock = clock

    async def app(self, app_id: str) -> App | None:
        try:
            return await self._apps.cached(app_id)
        except NotFound:
            return None

    def make(self, app: App | None, event_type: str, data: dict[str, Any],
             at: datetime | None = None) -> AppEvent | None:
        if app is None or not wants(app.webhook, event_type):
            return None
        now = at or self._clock.now()
        return AppEvent(new_id(int(now.timestamp() * 1000)), app.id, event_type,
                        envelope(event_type, data, now), now)

    async def emit(self, tx: Tx, app: App | None, event_type: str, data: dict[str, Any],
                   at: datetime | None = None) -> None:
        """`make`, and add the event in the caller's transaction when the app wants it."""
        ev = self.make(app, event_type, data, at)
        if ev is not None:
            await tx.events.add([ev])

    async def for_outcomes(self, claims: Sequence[Claim], outcomes: Sequence[Outcome]) -> list[AppEvent]:
        """delivery.sent / delivery.failed / delivery.skipped for the worker's final outcomes."""
        apps: dict[str, App | None] = {}
        for c in claims:
            if c.app_id not in apps:
                apps[c.app_id] = await self.app(c.app_id)
        if not any(app is not None and app.webhook for app in apps.values()):
            return []  # the common case: nobody listens, nothing is built
        by_id = {c.delivery_id: c for c in claims}
        found: list[AppEvent] = []
        for o in outcomes:
            if o.due_at is not None:
                continue  # retried later: not an event yet
            claim = by_id.get(o.delivery_id)
            if claim is None:
                continue
            msg = claim.message
            ev = self.make(apps[claim.app_id], f"delivery.{o.status.value}", {
                "delivery_id": o.delivery_id, "notification_id": o.notification_id,
                "user_id": msg.user_id if msg else None,
                "channel": msg.channel if msg else None, "provider": claim.provider,
                "status": o.status.value, "attempts": claim.attempts, "error": o.error,
                "provider_message_id": o.provider_message_id}, o.at)
            if ev is not None:
                found.append(ev)
        return found


class EventDispatcher:
    """Sends due app events; at-least-once, each event with a stable webhook-id."""

    def __init__(self, store: Store, clock: Clock, apps: Apps, box: SecretBox,
                 sender: WebhookSender, *, batch_size: int = 100, lease_seconds: float = 60.0,
                 keep_days: float = 7.0) -> None:
        self._store = store
        self._clock = clock
        self._apps = apps
        self._box = box
        self._sender = sender
        self._batch = batch_size
        self._lease = lease_seconds
        self._keep = timedelta(days=keep_days)

    async def run_once(self) -> int:
        lease_id = new_id()
        async with self._store.transaction() as tx:
            events = await tx.events.claim(self._clock.now(), self._batch, self._lease, lease_id)
        if not events:
            return 0
        by_app: dict[str, list[AppEvent]] = defaultdict(list)
        for ev in events:
            by_app[ev.app_id].append(ev)

        async def one_app(queue: list[AppEvent]) -> list[EventOutcome]:
            # In order within an app: its receiver sees events as they happened; apps do not
            # wait for each other's slow receivers.
            return [await self._send(ev, lease_id) for ev in queue]

        outcomes = [o for batch in await asyncio.gather(*map(one_app, by_app.values()))
                    for o in batch]
        async with self._store.transaction() as tx:
            await tx.events.record(outcomes)
        return len(events)

    async def _send(self, ev: AppEvent, lease_id: str) -> EventOutcome:
        now = self._clock.now()
        try:
            app = await self._apps.cached(ev.app_id)
        except NotFound:
            return EventOutcome(ev.id, lease_id, "failed", now, None, "the app was deleted")
        if not app.webhook or not app.webhook.get("url") or not app.webhook_secret:
            return EventOutcome(ev.id, lease_id, "failed", now, None, "the app has no webhook")
        secret = self._box.open(app.webhook_secret)
        body = orjson.dumps(ev.payload)
        answer = await self._sender.send(app.webhook["url"], secret, MESSAGE_ID_PREFIX + ev.id, body)
        if not answer.ok:
            log.info("webhook event %s for app %s not taken (attempt %d): %s", ev.id, ev.app_id,
                     ev.attempts, answer.error)
        return after_attempt(ev, lease_id, answer.ok, answer.error, self._clock.now(),
                             answer.retry_after)

    async def purge(self) -> int:
        async with self._store.transaction() as tx:
            return await tx.events.purge(self._clock.now() - self._keep)

    async def close(self) -> None:
        await self._sender.close()

    async def run(self, stop: asyncio.Event, poll_interval: float = 1.0,
                  purge_every: float = 3600.0) -> None:
        await poll(stop, self.run_once, interval=poll_interval, log=log, what="webhook events",
                   chore=Chore(self.purge, purge_every, first_after=60.0))
