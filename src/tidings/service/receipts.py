"""Delivery receipts from providers (Twilio status callbacks, SES and SNS events): move the
delivery, mark a bounced address undeliverable, and tell the app, all in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..domain.notifications import Delivery
from ..domain.receipts import Receipt
from ..ports import Store
from .events import Events

log = logging.getLogger("tidings.receipts")


class Receipts:
    def __init__(self, store: Store, events: Events) -> None:
        self._store = store
        self._events = events

    async def apply(self, app_id: str, receipts: Sequence[Receipt]) -> list[Delivery | None]:
        """The deliveries the receipts matched, as they are now (None where none matched)."""
        app = await self._events.app(app_id)
        found: list[Delivery | None] = []
        async with self._store.transaction() as tx:
            for r in receipts:
                matched = await tx.deliveries.receipt(app_id, r)
                if matched is None:
                    found.append(None)
                    log.info("receipt for unknown %s message %s of app %s", r.provider,
                             r.provider_message_id, app_id)
                    continue
                done, changed = matched
                found.append(done)
                if (r.address_undeliverable and done.channel == "email" and done.user_id
                        and done.target):
                    await tx.users.mark_email_undeliverable(
                        app_id, done.user_id, done.target, r.error or "undeliverable", r.at)
                if changed:
                    await self._events.emit(tx, app, f"delivery.{done.status}", {
                        "delivery_id": done.id, "notification_id": done.notification_id,
                        "user_id": done.user_id, "channel": done.channel,
                        "provider": done.provider, "status": done.status,
                        "attempts": done.attempts, "error": done.error,
                        "provider_message_id": r.provider_message_id}, r.at)
        return found
