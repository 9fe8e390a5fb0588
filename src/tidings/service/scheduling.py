"""Scheduled notifications: when their time comes, plan their deliveries (with the devices,
preferences and quiet hours of that moment), put them in the inbox and on the user's stream,
and hand them to the delivery worker."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from ..domain.errors import NotFound
from ..domain.notifications import DeliveryStatus, Notification, NotificationStatus
from ..domain.planning import Recipient, fire
from ..domain.targeting import AppRules
from ..ports import Clock, Store
from . import recipients
from .apps import Apps
from .polling import poll
from .stream import Streams

log = logging.getLogger("tidings.scheduler")


class Scheduler:
    def __init__(self, store: Store, clock: Clock, apps: Apps, *,
                 streams: Streams | None = None, on_queued: Callable[[], None] = lambda: None,
                 batch_size: int = 500) -> None:
        self._store = store
        self._clock = clock
        self._apps = apps
        self._streams = streams
        self._on_queued = on_queued
        self._batch = batch_size

    async def fire_due(self) -> int:
        """Send one batch of the scheduled notifications whose time has come; returns how many."""
        now = self._clock.now()
        events = []
        async with self._store.transaction() as tx:
            due = await tx.notifications.due(now, self._batch)
            if not due:
                return 0
            by_app: dict[str, list[Notification]] = defaultdict(list)
            for n in due:
                by_app[n.app_id].append(n)
            for app_id, items in by_app.items():
                try:
                    app = await self._apps.cached(app_id)
                except NotFound:  # deleted meanwhile (its notifications go with it)
                    for n in items:
                        n.status = NotificationStatus.CANCELED
                    continue
                rules = AppRules.of(app.defaults)
                user_ids = list(dict.fromkeys(n.user_id for n in items if n.user_id is not None))
                channels = {c for n in items for c in n.channels}
                found = {r.user_id: r for r in await recipients.load(
                    tx, app_id, user_ids, channels)}
                for n in items:
                    r = (found[n.user_id] if n.user_id is not None
                         else Recipient(phone=n.to.get("phone"), email=n.to.get("email")))
                    fire(n, app, r, rules, now)
            await tx.notifications.fire(due)
            if self._streams is not None:
                events = await self._streams.created(tx, due)
        if self._streams is not None and events:
            await self._streams.publish(events)
        if any(d.status == DeliveryStatus.PENDING for n in due for d in n.deliveries):
            self._on_queued()
        log.debug("fired %d scheduled notifications", len(due))
        return len(due)

    async def run(self, stop: asyncio.Event, interval: float = 0.25) -> None:
        """Polls often enough that a notification goes within a second of its time."""
        await poll(stop, self.fire_due, interval=interval, log=log, what="scheduler")
