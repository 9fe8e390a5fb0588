"""Delivery receipts from providers (Twilio status callbacks, SES and SNS events): move the
delivery, mark a bounced address undeliverable, and tell the app, all in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..domain.events import AppEvent
from ..domain.receipts import Receipt, Receipted
from ..ports import Store
from .events import Events

log = logging.getLogger("tidings.receipts")


class Receipts:
    def __init__(self, store: Store, events: Events) -> None:
        self._store = store
        self._events = events

    async def apply(self, app_id: str, receipts: Sequence[Receipt]) -> list[Receipted | None]:
        app = await self._events.app(app_id)
        found: list[Receipted | None] = []
        async with self._store.transaction() as tx:
            out: list[AppEvent] = []
            for r in receipts:
                done = await tx.deliveries.receipt(app_id, r)
                found.append(done)
                if done is None:
                    log.info("receipt for unknown %s message %s of app %s", r.provider,
                             r.provider_message_id, app_id)
                    continue
                if (r.address_undeliverable and done.channel == "email" and done.user_id
                        and done.target):
                    await tx.users.mark_email_undeliverable(
                        app_id, done.user_id, done.target, r.error or "undeliverable", r.at)
                if done.changed:
                    ev = self._events.make(app, f"delivery.{done.status}", {
                        "delivery_id": done.delivery_id, "notification_id": done.notification_id,
                        "user_id": done.user_id, "channel": done.channel,
                        "provider": done.provider, "status": done.status, "error": done.error,
                        "provider_message_id": r.provider_message_id}, r.at)
                    if ev is not None:
                        out.append(ev)
            await tx.events.add(out)
        return found
