"""Broadcasts: accepted at once, then expanded by a worker in batches into one notification
per recipient. Each batch and the broadcast's cursor commit together under the worker's lease,
so a worker that dies mid-expansion is replaced by another that goes on from the cursor:
nobody is skipped and nobody gets two (the store also refuses a second notification of one
broadcast for one user)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from typing import Any

from ..domain.broadcasts import (
    Broadcast,
    BroadcastStatus,
    Progress,
    audience_kind,
    message_doc,
    message_from,
)
from ..domain.errors import NotFound, ValidationFailed
from ..domain.idempotency import IdempotencyClaim
from ..domain.ids import new_id
from ..domain.notifications import DeliveryStatus, Message
from ..domain.planning import plan_notification
from ..domain.schedule import parse_local_time
from ..domain.segments import parse_segment
from ..domain.targeting import AppRules
from ..ports import Clock, Store, Tx
from . import recipients
from .apps import Apps
from .idempotency import Answer, Idempotency
from .polling import poll
from .stream import Streams

log = logging.getLogger("tidings.broadcasts")
CANCELED_REASON = "the broadcast was canceled"
RETRY_AFTER = timedelta(seconds=5)


class _LeaseLost(Exception):
    """The broadcast was canceled, or another worker took it over: undo this batch."""


@dataclass(frozen=True)
class BroadcastView:
    broadcast: Broadcast
    progress: Progress


class Broadcasts:
    def __init__(self, store: Store, clock: Clock, apps: Apps, idempotency: Idempotency, *,
                 streams: Streams | None = None, on_queued: Callable[[], None] = lambda: None,
                 batch_size: int = 1000, lease_seconds: float = 60.0,
                 poll_interval: float = 0.5) -> None:
        self._store = store
        self._clock = clock
        self._apps = apps
        self._idempotency = idempotency
        self._streams = streams
        self._on_queued = on_queued
        self._wake = asyncio.Event()
        self._poll = poll_interval
        self._batch = batch_size
        self._lease = timedelta(seconds=lease_seconds)

    # -- the API ---------------------------------------------------------------------------
    async def create(self, app_id: str, audience: dict[str, Any], message: Message,
                     when: datetime | time | None, claim: IdempotencyClaim | None,
                     render: Callable[[BroadcastView], tuple[int, bytes]]) -> Answer:
        """`when` is checked already: an instant ahead, a local time, or None for now."""
        kind = audience_kind(audience)
        if kind == "segment":
            parse_segment(audience["segment"], "to.segment")
        now = self._clock.now()
        send_at = when if isinstance(when, datetime) else None
        item = Broadcast(
            id=new_id(), app_id=app_id, audience=audience, message=message_doc(message),
            send_at=send_at, local_time=when.strftime("%H:%M") if isinstance(when, time) else None,
            status=BroadcastStatus.SCHEDULED if send_at else BroadcastStatus.QUEUED,
            cursor=None, recipients=None, expanded=0, error=None, created_at=now,
            updated_at=now, due_at=send_at or now)

        async def add(tx: Tx) -> BroadcastView:
            if kind == "topic" and await tx.topics.get(app_id, audience["topic"]) is None:
                raise NotFound(f"topic {audience['topic']} not found")
            await tx.broadcasts.add(item)
            return BroadcastView(item, Progress())

        answer = await self._idempotency.run(claim, add, render)
        self._wake.set()
        return answer

    async def get(self, app_id: str, broadcast_id: str) -> BroadcastView:
        async with self._store.reader() as tx:
            found = await tx.broadcasts.get(app_id, broadcast_id)
            if found is None:
                raise NotFound(f"broadcast {broadcast_id} not found")
            return BroadcastView(found, await tx.broadcasts.progress(app_id, broadcast_id))

    async def list(self, app_id: str, limit: int, before_id: str | None) -> list[Broadcast]:
        async with self._store.reader() as tx:
            return await tx.broadcasts.list(app_id, limit, before_id)

    async def cancel(self, app_id: str, broadcast_id: str) -> BroadcastView:
        """Stops the expansion at once; the worker then cancels the recipients' notifications
        that are still scheduled and skips their deliveries not yet sent."""
        async with self._store.transaction() as tx:
            found = await tx.broadcasts.cancel(app_id, broadcast_id, self._clock.now())
            if found is None:
                raise NotFound(f"broadcast {broadcast_id} not found")
            progress = await tx.broadcasts.progress(app_id, broadcast_id)
        self._wake.set()
        return BroadcastView(found, progress)

    # -- the worker ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await poll(stop, self.run_once, interval=self._poll, log=log, what="broadcasts",
                   wake=self._wake)

    async def run_once(self) -> int:
        """Take one due broadcast and expand (or sweep) it until it is done, its lease is
        lost, or a batch fails. Returns the recipients handled."""
        lease_id = new_id()
        async with self._store.transaction() as tx:
            item = await tx.broadcasts.claim(self._clock.now(), self._lease.total_seconds(),
                                             lease_id)
        if item is None:
            return 0
        try:
            if item.status == BroadcastStatus.CANCELED:
                return await self._sweep(item, lease_id)
            return await self._expand(item, lease_id)
        except _LeaseLost:
            log.info("broadcast %s: lease lost (canceled or taken over); stopping", item.id)
            return 1
        except ValidationFailed as exc:  # its audience no longer parses: it cannot go on
            log.error("broadcast %s failed: %s", item.id, exc)
            await self._give_up(item, lease_id, str(exc), None)
            return 1
        except Exception as exc:
            # Try again shortly rather than after the whole lease; the error shows meanwhile.
            await self._give_up(item, lease_id, f"{type(exc).__name__}: {exc}",
                                self._clock.now() + RETRY_AFTER)
            raise

    async def _give_up(self, item: Broadcast, lease_id: str, error: str,
                       again_at: datetime | None) -> None:
        item.error = error[:500]
        item.updated_at = self._clock.now()
        if again_at is None:
            item.status = BroadcastStatus.FAILED
        try:
            async with self._store.transaction() as tx:
                await tx.broadcasts.advance(item, lease_id, again_at)
        except Exception:
            log.exception("broadcast %s: could not record its error", item.id)

    async def _expand(self, item: Broadcast, lease_id: str) -> int:
        try:
            app = await self._apps.cached(item.app_id)
        except NotFound:
            return 0  # the app is gone, and its broadcasts with it
        rules = AppRules.of(app.defaults)
        message = message_from(item.message)
        when: datetime | time | None = (parse_local_time(item.local_time, "send_at.local_time")
                                        if item.local_time else None)
        kind = audience_kind(item.audience)
        segment = parse_segment(item.audience["segment"], "to.segment") if kind == "segment" else None
        handled = 0
        if item.status != BroadcastStatus.EXPANDING:
            item.status = BroadcastStatus.EXPANDING
            async with self._store.reader() as tx:
                item.recipients = (await tx.topics.count(app.id, item.audience["topic"])
                                   if kind == "topic" else await tx.users.count(app.id, segment))
        while True:
            now = self._clock.now()
            events = []
            async with self._store.transaction() as tx:
                if kind == "topic":
                    ids = await tx.topics.subscriber_ids(app.id, item.audience["topic"],
                                                         item.cursor, self._batch)
                    people = await recipients.load(tx, app.id, ids, message.channels)
                else:
                    users = await tx.users.list(app.id, segment, self._batch, item.cursor)
                    ids = [u.id for u in users]
                    people = await recipients.load(tx, app.id, ids, message.channels,
                                                   {u.id: u for u in users})
                # Local times are read from when the broadcast was made: every batch, however
                # late, gives a timezone the same 09:00.
                items = [plan_notification(
                    app, r, message, now, rules, broadcast_id=item.id,
                    send_at=recipients.send_time(when, r, rules, item.created_at))
                    for r in people]
                await tx.notifications.add_many(items)
                if self._streams is not None:
                    events = await self._streams.created(tx, items)
                done = len(ids) < self._batch
                # What the broadcast becomes if this batch commits (until then `item` stays
                # as stored, so a failure records the error without moving the cursor).
                after = replace(item, expanded=item.expanded + len(ids),
                                cursor=ids[-1] if ids else item.cursor, updated_at=now)
                if done:
                    after.status, after.recipients = BroadcastStatus.COMPLETED, after.expanded
                if not await tx.broadcasts.advance(after, lease_id,
                                                   None if done else now + self._lease):
                    raise _LeaseLost
            item.expanded, item.cursor, item.updated_at = after.expanded, after.cursor, now
            item.status, item.recipients = after.status, after.recipients
            handled += len(ids)
            if self._streams is not None and events:
                await self._streams.publish(events)
            if any(d.status == DeliveryStatus.PENDING for n in items for d in n.deliveries):
                self._on_queued()
            if done:
                log.info("broadcast %s: %d recipients", item.id, item.expanded)
                return max(handled, 1)

    async def _sweep(self, item: Broadcast, lease_id: str) -> int:
        handled = 0
        while True:
            now = self._clock.now()
            async with self._store.transaction() as tx:
                last = await tx.broadcasts.sweep(item.id, item.cursor, CANCELED_REASON, now,
                                                 self._batch)
                after = replace(item, cursor=last, updated_at=now)
                if not await tx.broadcasts.advance(after, lease_id,
                                                   None if last is None else now + self._lease):
                    raise _LeaseLost
            item.cursor, item.updated_at = last, now
            if last is None:
                return max(handled, 1)
            handled += self._batch

